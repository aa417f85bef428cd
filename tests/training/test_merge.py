"""`snrtune merge`: every method gives a standard HF model directory computing what the trained model did."""

from __future__ import annotations

import json

import peft
import pytest
import torch
import transformers
from train_data import SELECTED_MODULES, write_alpaca, write_config, write_selection

from snrtune.errors import SnrtuneError
from snrtune.training.merge import merge
from snrtune.training.train import train

torch.set_num_threads(1)  # two threads on a shared 2-core machine spin-wait: 100x slower small matmuls


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("merge-inputs")
    return {"data": write_alpaca(d / "data.jsonl"), "selection": write_selection(d / "sel.yaml"),
            "config": write_config(d / "train.yaml", max_steps=3, val_fraction=0.0)}


def logits(model, tokenizer):
    ids = tokenizer("The capital of France is Paris.", return_tensors="pt")["input_ids"]
    model.eval()
    with torch.no_grad():
        return model(ids).logits


def load(model_dir):
    return transformers.AutoModelForCausalLM.from_pretrained(model_dir)


def test_spectrum_merge_equals_the_trained_model_exactly(tiny_llama, inputs, tmp_path):
    _, trained = train(tiny_llama, "spectrum", inputs["data"], tmp_path / "run", selection=inputs["selection"],
                       config=inputs["config"])
    identity = merge(tmp_path / "run", tiny_llama, tmp_path / "merged")
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "merged")
    assert torch.equal(logits(load(tmp_path / "merged"), tokenizer), logits(trained, tokenizer))
    base, merged = load(tiny_llama).state_dict(), load(tmp_path / "merged").state_dict()
    changed = {n for n in base if not torch.equal(base[n], merged[n])}
    assert changed == {m + ".weight" for m in SELECTED_MODULES}
    assert identity["model_form"] == "merged-full-precision"
    assert json.loads((tmp_path / "merged" / "snrtune_run.json").read_text())["id"] == "tiny-llama/spectrum-t25-s0"


def test_lora_merge_matches_the_adapter_model(tiny_llama, inputs, tmp_path):
    _, trained = train(tiny_llama, "lora", inputs["data"], tmp_path / "run", config=inputs["config"])
    merge(tmp_path / "run", tiny_llama, tmp_path / "merged")
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "merged")
    merged = load(tmp_path / "merged")
    assert not any("lora" in name for name, _ in merged.named_parameters())
    torch.testing.assert_close(logits(merged, tokenizer), logits(trained, tokenizer), rtol=1e-4, atol=1e-4)


def test_qlora_adapter_is_merged_into_the_full_precision_base(tiny_llama, inputs, tmp_path):
    train(tiny_llama, "qlora", inputs["data"], tmp_path / "run", config=inputs["config"])
    identity = merge(tmp_path / "run", tiny_llama, tmp_path / "merged")
    assert identity["model_form"] == "merged-full-precision" and "full-precision base" in identity["merge"]
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert "quantization_config" not in config
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "merged")
    unmerged = peft.PeftModel.from_pretrained(load(tiny_llama), str(tmp_path / "run"))
    torch.testing.assert_close(logits(load(tmp_path / "merged"), tokenizer), logits(unmerged, tokenizer),
                               rtol=1e-4, atol=1e-4)


def test_full_run_is_copied(tiny_llama, inputs, tmp_path):
    _, trained = train(tiny_llama, "full", inputs["data"], tmp_path / "run", config=inputs["config"])
    merge(tmp_path / "run", tiny_llama, tmp_path / "merged")
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "merged")
    assert torch.equal(logits(load(tmp_path / "merged"), tokenizer), logits(trained, tokenizer))
    assert not (tmp_path / "merged" / "metrics.json").exists()
    assert "sweep_candidate" not in json.loads((tmp_path / "merged" / "snrtune_run.json").read_text())
    # a sweep candidate's merge marks its identity with the learning rate it trained with (metrics.json)
    lr = json.loads((tmp_path / "run" / "metrics.json").read_text())["config"]["learning_rate"]
    merge(tmp_path / "run", tiny_llama, tmp_path / "candidate", sweep_candidate=True)
    identity = json.loads((tmp_path / "candidate" / "snrtune_run.json").read_text())
    assert identity["sweep_candidate"] is True and identity["learning_rate"] == lr > 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    metrics["config"].pop("learning_rate")
    (tmp_path / "run" / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(SnrtuneError, match=r"metrics.json: config.learning_rate is None; expected the positive"):
        merge(tmp_path / "run", tiny_llama, tmp_path / "candidate2", sweep_candidate=True)
    assert not (tmp_path / "candidate2").exists()


def test_merge_rejects_an_unfinished_run_and_leaves_nothing(tiny_llama, tmp_path):
    (tmp_path / "run.partial").mkdir()
    with pytest.raises(SnrtuneError, match="snrtune_run.json"):
        merge(tmp_path / "run.partial", tiny_llama, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_spectrum_delta_for_another_model_is_an_error(tiny_llama, tiny_model_factory, inputs, tmp_path):
    train(tiny_llama, "spectrum", inputs["data"], tmp_path / "run", selection=inputs["selection"],
          config=write_config(tmp_path / "c.yaml", max_steps=1, val_fraction=0.0))
    with pytest.raises(SnrtuneError, match="is not the model run 'tiny-llama/spectrum-t25-s0'"):
        merge(tmp_path / "run", tiny_model_factory("mistral"), tmp_path / "merged")
    assert list(tmp_path.glob("*merged*")) == []


CUSTOM_TEMPLATE = ("{% for message in messages %}{{ '### ' + message['role'] + ': ' + message['content'] + '\n' }}"
                   "{% endfor %}{% if add_generation_prompt %}{{ '### assistant: ' }}{% endif %}")


@pytest.mark.parametrize("method", ["spectrum", "full", "lora", "qlora"])
def test_the_chat_template_trained_with_survives_merge(tiny_llama, inputs, tmp_path, method):
    """A chat_template from the training YAML is saved with the run and is the merged model's template, which
    `snrtune evaluate --apply-chat-template` (lm-eval's HFLM loading the tokenizer from the directory) uses."""
    from snrtune.training.sft_data import render

    config = write_config(tmp_path / "train.yaml", max_steps=1, val_fraction=0.0, chat_template=CUSTOM_TEMPLATE)
    selection = inputs["selection"] if method == "spectrum" else None
    train(tiny_llama, method, inputs["data"], tmp_path / "run", selection=selection, config=config)
    assert (tmp_path / "run" / "chat_template.jinja").read_text() == CUSTOM_TEMPLATE
    merge(tmp_path / "run", tiny_llama, tmp_path / "merged")
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "merged")
    conversation = [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris."}]
    assert render(tokenizer, conversation) == "### user: Capital of France?\n### assistant: Paris.\n"
    prompt = render(tokenizer, conversation[:1], generation_prompt=True)
    assert prompt == "### user: Capital of France?\n### assistant: "
    base = transformers.AutoTokenizer.from_pretrained(tiny_llama)
    assert base.chat_template != CUSTOM_TEMPLATE  # the base's own (ChatML) is not what the merged model carries


@pytest.mark.parametrize("status, expected", [("diverged", "diverged"), ("finished", "finished"),
                                              (None, "finished")])
def test_merge_records_the_run_status_for_evaluate(tiny_llama, inputs, tmp_path_factory, status, expected):
    """metrics.json's status reaches the merged snrtune_run.json (a run recorded without one: finished)."""
    run = tmp_path_factory.getbasetemp() / "status-run"
    if not run.exists():
        train(tiny_llama, "full", inputs["data"], run, config=write_config(
            tmp_path_factory.mktemp("c") / "c.yaml", max_steps=1, val_fraction=0.0))
    metrics = json.loads((run / "metrics.json").read_text())
    metrics.pop("status", None)
    (run / "metrics.json").write_text(json.dumps(metrics if status is None else {**metrics, "status": status}))
    out = tmp_path_factory.mktemp("merged") / "m"
    assert merge(run, tiny_llama, out)["status"] == expected
    assert json.loads((out / "snrtune_run.json").read_text())["status"] == expected


def test_merge_refuses_an_unknown_run_status(tiny_llama, inputs, tmp_path):
    train(tiny_llama, "full", inputs["data"], tmp_path / "run",
          config=write_config(tmp_path / "c.yaml", max_steps=1, val_fraction=0.0))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    (tmp_path / "run" / "metrics.json").write_text(json.dumps({**metrics, "status": "done"}))
    with pytest.raises(SnrtuneError, match=r"metrics.json': status 'done'; expected one of finished, diverged"):
        merge(tmp_path / "run", tiny_llama, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()
