"""`snrtune train` on the tiny Llama: every method trains what it should, and nothing else."""

from __future__ import annotations

import json
import re
import os

import pytest
import yaml
import torch
import transformers
from safetensors.torch import load_file
from train_data import SELECTED_MODULES, SELECTED_PARAMS, write_alpaca, write_config, write_preferences, write_selection

from snrtune.training import methods
from snrtune.cli import main
from snrtune.errors import SnrtuneError
from snrtune.training.train import load_config, train

torch.set_num_threads(1)  # two threads on a shared 2-core machine spin-wait: 100x slower small matmuls

# LoRA r=32 on every linear layer but the (tied) head, per layer: r·(in+out) summed over
# q 64→64, k 64→32, v 64→32, o 64→64, gate 64→128, up 64→128, down 128→64 = 32·1024; 4 layers.
LORA_ALL_LINEAR = 32 * (128 + 96 + 96 + 128 + 192 + 192 + 192) * 4
METRICS_KEYS = {"run", "trainable_params", "total_params", "train_loss", "eval_loss", "wall_time_s", "tokens_per_s",
                "train_tokens", "peak_memory_bytes", "peak_rss_bytes", "peak_cuda_bytes", "config", "selection",
                "versions", "gpu_seconds", "cpu_seconds", "train_seconds_total", "attempts", "peak_allocated_bytes",
                "peak_reserved_bytes"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("train-inputs")
    return {"data": write_alpaca(d / "data.jsonl"), "config": write_config(d / "train.yaml"),
            "selection": write_selection(d / "sel.yaml"), "dir": d}


@pytest.fixture(scope="module")
def spectrum_run(tiny_llama, inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "spectrum"
    metrics, _ = train(tiny_llama, "spectrum", inputs["data"], out, selection=inputs["selection"],
                       config=inputs["config"])
    return out, metrics


def base_state(model_dir):
    return dict(transformers.AutoModelForCausalLM.from_pretrained(model_dir).named_parameters())


def loss_fell(metrics):
    losses = [loss for _, loss in metrics["train_loss"]]
    return sum(losses[-2:]) / 2 < losses[0] - 0.2


def test_spectrum_trains_exactly_the_selection(spectrum_run, tiny_llama):
    out, metrics = spectrum_run
    assert metrics["trainable_params"] == SELECTED_PARAMS == metrics["details"]["optimizer_params"]
    assert metrics["total_params"] == sum(p.numel() for p in base_state(tiny_llama).values())
    delta = load_file(out / "spectrum_delta.safetensors")
    assert sorted(delta) == sorted(m + ".weight" for m in SELECTED_MODULES)
    base = base_state(tiny_llama)
    for name in delta:
        assert not torch.equal(delta[name], base[name]), f"{name} did not change"
    assert loss_fell(metrics), metrics["train_loss"]


def test_spectrum_run_directory_follows_the_contract(spectrum_run):
    out, metrics = spectrum_run
    assert sorted(p.name for p in out.iterdir()) == [
        "chat_template.jinja", "metrics.json", "selection.yaml", "snrtune_output.json", "snrtune_run.json",
        "spectrum_delta.safetensors", "tokenizer.json", "tokenizer_config.json"]
    assert not out.with_name(out.name + ".partial").exists()
    assert metrics["status"] == "finished" and metrics["diverged"] is None
    record = json.loads((out / "snrtune_run.json").read_text())
    assert re.fullmatch(r"[0-9a-f]{64}", record.pop("base_fingerprint"))  # what merge checks its --base against
    assert record == {
        "id": "tiny-llama/spectrum-t25-s0", "model": "tiny-llama", "method": "spectrum", "top_percent": 25,
        "seed": 0, "stage": "sft"}
    on_disk = json.loads((out / "metrics.json").read_text())
    assert METRICS_KEYS <= set(on_disk)
    assert [step for step, _ in on_disk["train_loss"]] == [1, 2, 3, 4, 5, 6]
    assert [step for step, _ in on_disk["eval_loss"]] == [6]
    assert on_disk["config"]["learning_rate"] == 1e-2 and on_disk["config"]["lora_r"] == 32
    assert on_disk["peak_memory_bytes"] == on_disk["peak_rss_bytes"] > 0
    assert on_disk["train_tokens"] > 0 and on_disk["tokens_per_s"] > 0


def test_resume_continues_from_the_saved_step(spectrum_run, tiny_llama, inputs, tmp_path):
    class Preempted(Exception):
        pass

    class PreemptAfterStep4(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 4:
                raise Preempted

    out = tmp_path / "run"
    with pytest.raises(Preempted):
        train(tiny_llama, "spectrum", inputs["data"], out, selection=inputs["selection"], config=inputs["config"],
              callbacks=[PreemptAfterStep4()])
    assert not out.exists()
    assert (tmp_path / "run.partial" / "checkpoints" / "checkpoint-3").is_dir()
    first = json.loads((tmp_path / "run.partial" / "attempts.json").read_text())["attempts"]
    assert len(first) == 1 and first[0]["device"] == "cpu" and first[0]["seconds"] > 0
    metrics, _ = train(tiny_llama, "spectrum", inputs["data"], out, selection=inputs["selection"],
                       config=inputs["config"], resume=True)
    assert metrics["details"]["resumed_from_step"] == 3 and metrics["details"]["global_step"] == 6
    assert [step for step, _ in metrics["train_loss"]] == [1, 2, 3, 4, 5, 6]
    # the resumed run adds its training seconds to the preempted attempt's (1 process on a CPU: cpu_seconds)
    assert metrics["attempts"] == 2 and metrics["gpu_seconds"] == 0
    assert metrics["cpu_seconds"] == pytest.approx(first[0]["seconds"] + metrics["details"]["train_seconds"], abs=0.05)
    assert metrics["peak_allocated_bytes"] is None and metrics["peak_reserved_bytes"] is None
    # this session's steps 4-6: its first (the warm-up) timed apart, steps 5 and 6 after it
    steady = metrics["details"]["after_first_step"]
    assert steady["steps"] == 2 and 0 < steady["seconds"] < metrics["details"]["train_seconds"]
    assert 0 < steady["tokens"] < metrics["train_tokens"]
    step_seconds = metrics["details"]["step_seconds"]  # this session's three steps, one by one
    assert len(step_seconds) == 3 and all(s > 0 for s in step_seconds)
    assert sum(step_seconds[1:]) <= steady["seconds"]  # which also runs to the end of training
    assert not (out / "attempts.json").exists()
    # the resumed run ends where the uninterrupted one did
    resumed, straight = load_file(out / "spectrum_delta.safetensors"), load_file(spectrum_run[0] / "spectrum_delta.safetensors")
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=1e-5, atol=1e-6)


def test_full_trains_every_parameter(tiny_llama, inputs, tmp_path):
    metrics, _ = train(tiny_llama, "full", inputs["data"], tmp_path / "full", config=inputs["config"])
    total = sum(p.numel() for p in base_state(tiny_llama).values())
    assert metrics["trainable_params"] == metrics["total_params"] == total
    assert (tmp_path / "full" / "model.safetensors").is_file()
    assert loss_fell(metrics), metrics["train_loss"]


def test_lora_adapts_every_linear_layer_and_freezes_the_base(tiny_llama, inputs, tmp_path):
    metrics, model = train(tiny_llama, "lora", inputs["data"], tmp_path / "lora", config=inputs["config"])
    assert metrics["trainable_params"] == LORA_ALL_LINEAR
    assert len(metrics["details"]["lora_target_modules"]) == 7 * 4
    base = base_state(tiny_llama)
    for name, param in model.named_parameters():
        if "lora_" not in name:
            assert torch.equal(param, base[methods.unwrapped_name(name)]), name
    assert (tmp_path / "lora" / "adapter_model.safetensors").is_file()
    assert loss_fell(metrics), metrics["train_loss"]


def test_qlora_uses_nf4_linear4bit_layers(tiny_llama, inputs, tmp_path):
    import bitsandbytes as bnb

    metrics, model = train(tiny_llama, "qlora", inputs["data"], tmp_path / "qlora", config=inputs["config"])
    q_proj = model.get_submodule("base_model.model.model.layers.0.self_attn.q_proj")
    assert isinstance(q_proj.base_layer, bnb.nn.Linear4bit)
    assert q_proj.base_layer.weight.quant_state.quant_type == "nf4"
    assert q_proj.base_layer.weight.quant_state.nested  # double quantization
    assert metrics["trainable_params"] == LORA_ALL_LINEAR
    assert metrics["total_params"] == sum(p.numel() for p in base_state(tiny_llama).values()) + LORA_ALL_LINEAR
    assert loss_fell(metrics), metrics["train_loss"]


def test_laser_qlora_matches_qlora_parameter_count(tiny_llama, inputs, tmp_path):
    metrics, model = train(tiny_llama, "laser-qlora", inputs["data"], tmp_path / "laser", config=inputs["config"],
                           selection=inputs["selection"], match_params_of="qlora")
    # q_proj (64+64) and down_proj (128+64) against 1024 per layer × 4: r = round(32·4096/320) = 410
    assert metrics["setup"]["lora_r"] == 410 and metrics["config"]["lora_r"] == 32
    assert metrics["trainable_params"] == 410 * (128 + 192)
    # alpha rises with the rank, so the update scale stays QLoRA's: 16/32 = 0.5 = (16·410/32)/410
    alpha = metrics["config"]["lora_alpha"]
    assert metrics["setup"]["lora_alpha"] == pytest.approx(alpha * 410 / 32)
    assert metrics["setup"]["lora_scale"] == pytest.approx(alpha / 32)
    adapted = model.get_submodule("base_model.model." + sorted(SELECTED_MODULES)[0])
    assert adapted.scaling["default"] == pytest.approx(alpha / 32)
    assert metrics["details"]["lora_target_modules"] == sorted(SELECTED_MODULES)
    assert metrics["run"]["id"] == "tiny-llama/laser-qlora-t25-s0"


def test_rslora_keeps_alpha_over_sqrt_r_when_the_rank_is_matched(tiny_llama, inputs, tmp_path):
    metrics, model = train(tiny_llama, "laser-qlora", inputs["data"], tmp_path / "laser", config=inputs["config"],
                           selection=inputs["selection"], match_params_of="qlora", overrides={"use_rslora": True})
    alpha = metrics["config"]["lora_alpha"]
    assert metrics["setup"]["use_rslora"] is True
    assert metrics["setup"]["lora_alpha"] == pytest.approx(alpha * (410 / 32) ** 0.5)
    assert metrics["setup"]["lora_scale"] == pytest.approx(alpha / 32 ** 0.5)  # QLoRA's rsLoRA scale at r=32
    adapted = model.get_submodule("base_model.model." + sorted(SELECTED_MODULES)[0])
    assert adapted.scaling["default"] == pytest.approx(alpha / 32 ** 0.5)


def test_set_overrides_the_config_and_is_what_metrics_records(tiny_llama, inputs, tmp_path, capsys):
    from snrtune.cli import main

    out = tmp_path / "lora"
    args = ["train", str(tiny_llama), "--method", "lora", "--data", str(inputs["data"]), "--config",
            str(inputs["config"]), "--out", str(out), "--max-steps", "2"]
    assert main(args + ["--set", "learning_rate=3e-3", "--set", "lora_alpha=64"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["learning_rate"] == 3e-3 and metrics["setup"]["lora_scale"] == 64 / 32
    assert main(args[:-6] + ["--out", str(tmp_path / "bad"), "--set", "learning_rate"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err
    assert main(args[:-6] + ["--out", str(tmp_path / "bad"), "--set", "learning_rat=1"]) == 2
    assert "learning_rat" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_dpo_stage_trains_spectrum_selection_only(tiny_llama, inputs, tmp_path):
    data = write_preferences(tmp_path / "pref.jsonl")
    cfg = write_config(tmp_path / "dpo.yaml", max_steps=3, learning_rate=1e-3, val_fraction=0.0)
    metrics, model = train(tiny_llama, "spectrum", data, tmp_path / "dpo", selection=inputs["selection"],
                           config=cfg, stage="dpo")
    assert metrics["run"]["id"] == "tiny-llama/spectrum-t25-s0-dpo" and metrics["run"]["stage"] == "dpo"
    assert "from_run" not in metrics["run"]  # the base model is no run
    assert [step for step, _ in metrics["train_loss"]] == [1, 2, 3]
    base = base_state(tiny_llama)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, base[n])}
    assert changed == {m + ".weight" for m in SELECTED_MODULES}


def test_selection_pattern_matching_nothing_is_an_error(tiny_llama, inputs, tmp_path):
    bad = write_selection(tmp_path / "bad.yaml", extra_patterns=[r"^lm\.head"])
    with pytest.raises(SnrtuneError, match=r"lm\\\\.head"):
        train(tiny_llama, "spectrum", inputs["data"], tmp_path / "r", selection=bad, config=inputs["config"])
    assert not (tmp_path / "r").exists()


def test_trainable_count_must_equal_the_selection(tiny_llama):
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_llama)
    sel = {"unfrozen_parameters": [r"^lm_head\.weight$"], "trainable_params": 320 * 64}
    model, _ = methods.prepare_spectrum(model, None, sel, None)  # tied: lm_head.weight is model.embed_tokens.weight
    assert model.model.embed_tokens.weight.requires_grad
    with pytest.raises(SnrtuneError, match="trainable_params=5"):
        methods.prepare_spectrum(model, None, {**sel, "trainable_params": 5}, None)


def test_laser_qlora_rejects_modules_the_model_lacks(tiny_llama, inputs, tmp_path):
    sel = write_selection(tmp_path / "sel.yaml", modules=["model.layers.9.self_attn.q_proj"], trainable=4096)
    with pytest.raises(SnrtuneError, match=r"key 'unfrozen_parameters\[0\]': .*layers.*9.* matches no parameter"):
        train(tiny_llama, "laser-qlora", inputs["data"], tmp_path / "r", selection=sel, config=inputs["config"])


def test_config_rejects_unknown_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("learning_rate: 1.0e-4\nlora_rank: 8\n")
    with pytest.raises(SnrtuneError, match="lora_rank"):
        load_config(str(path))
    assert load_config(None).learning_rate == 2e-4


def test_cli_reports_missing_selection_as_one_line(tiny_llama, inputs, tmp_path, capsys):
    code = main(["train", str(tiny_llama), "--method", "spectrum", "--data", str(inputs["data"]),
                 "--out", str(tmp_path / "r")])
    assert code == 2
    assert "--selection" in capsys.readouterr().err


def test_spectrum_with_gradient_checkpointing_still_trains_the_selection(tiny_llama, inputs, tmp_path):
    cfg = write_config(tmp_path / "gc.yaml", gradient_checkpointing=True, max_steps=2, val_fraction=0.0)
    metrics, model = train(tiny_llama, "spectrum", inputs["data"], tmp_path / "gc", selection=inputs["selection"],
                           config=cfg)
    assert model.is_gradient_checkpointing
    base = base_state(tiny_llama)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, base[n])}
    assert changed == {m + ".weight" for m in SELECTED_MODULES}  # frozen embeddings did not stop the gradient


def test_selection_from_snrtune_select_trains_its_stated_count(tiny_llama, inputs, tmp_path):
    """The contract between `select` and `train`: counts agree, also with the tied embedding included."""
    assert main(["scan", str(tiny_llama), "--out", str(tmp_path / "snr.json")]) == 0
    assert main(["select", str(tmp_path / "snr.json"), "--top-percent", "50", "--include", "embed_tokens",
                 "--out", str(tmp_path / "sel.yaml")]) == 0
    sel = yaml.safe_load((tmp_path / "sel.yaml").read_text())
    cfg = write_config(tmp_path / "c.yaml", max_steps=1, val_fraction=0.0)
    spectrum, _ = train(tiny_llama, "spectrum", inputs["data"], tmp_path / "s", selection=tmp_path / "sel.yaml",
                        config=cfg)
    assert spectrum["trainable_params"] == sel["trainable_params"] == spectrum["details"]["optimizer_params"]
    laser, _ = train(tiny_llama, "laser-qlora", inputs["data"], tmp_path / "l", selection=tmp_path / "sel.yaml",
                     config=cfg)
    assert laser["details"]["lora_target_modules"] == sorted(sel["exports"]["peft"]["target_modules"])


# ---------------------------------------------------------------- resume: only an unchanged run, only a complete checkpoint

class Preempted(Exception):
    pass


def preempt_after(step):
    class Preempt(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise Preempted

    return Preempt()


def interrupted_spectrum_run(tiny_llama, data, config, selection, out, step):
    with pytest.raises(Preempted):
        train(tiny_llama, "spectrum", data, out, selection=selection, config=config, callbacks=[preempt_after(step)])
    partial = out.with_name(out.name + ".partial")
    assert not out.exists() and json.loads((partial / "fingerprint.json").read_text())["sha256"]
    return partial


def test_resume_with_changed_settings_starts_afresh_and_records_what_trained(tiny_llama, inputs, tmp_path, capsys):
    """Kill a run, change its learning rate, resume: it must train from step 0 at the new rate."""
    out = tmp_path / "run"
    partial = interrupted_spectrum_run(tiny_llama, inputs["data"], inputs["config"], inputs["selection"], out, 4)
    assert (partial / "checkpoints" / "checkpoint-3").is_dir()
    faster = write_config(tmp_path / "faster.yaml", learning_rate=2e-2)
    capsys.readouterr()
    metrics, _ = train(tiny_llama, "spectrum", inputs["data"], out, selection=inputs["selection"], config=faster,
                       resume=True)
    said = capsys.readouterr().out
    assert "--resume: run.partial was made with different settings (learning_rate); starting afresh" in said
    assert metrics["details"]["resumed_from_step"] == 0 and metrics["config"]["learning_rate"] == 2e-2
    straight, _ = train(tiny_llama, "spectrum", inputs["data"], tmp_path / "straight", selection=inputs["selection"],
                        config=faster)
    resumed, fresh = load_file(out / "spectrum_delta.safetensors"), load_file(tmp_path / "straight" / "spectrum_delta.safetensors")
    for name in fresh:  # what trained is the new learning rate from the start, as metrics.json says
        torch.testing.assert_close(resumed[name], fresh[name], rtol=1e-5, atol=1e-6)
    # no fingerprint, ledger, checkpoints or data rows left: the delta, the selection, the tokenizer, the records
    assert sorted(p.name for p in out.iterdir()) == [
        "chat_template.jinja", "metrics.json", "selection.yaml", "snrtune_output.json", "snrtune_run.json",
        "spectrum_delta.safetensors", "tokenizer.json", "tokenizer_config.json"]


def test_resume_with_changed_data_starts_afresh_naming_the_data(tiny_llama, inputs, tmp_path, capsys):
    out = tmp_path / "run"
    data = write_alpaca(tmp_path / "data.jsonl")
    interrupted_spectrum_run(tiny_llama, data, inputs["config"], inputs["selection"], out, 4)
    data.write_text(data.read_text().replace("Paris", "Lyon"))
    capsys.readouterr()
    metrics, _ = train(tiny_llama, "spectrum", data, out, selection=inputs["selection"], config=inputs["config"],
                       resume=True, max_steps=3)
    assert "was made with different settings (max_steps), data; starting afresh" in capsys.readouterr().out
    assert metrics["details"]["resumed_from_step"] == 0 and metrics["details"]["global_step"] == 3
    assert metrics["data"]["sha256"] != metrics["details"]["fingerprint"]


def test_resume_skips_a_half_written_newest_checkpoint(spectrum_run, tiny_llama, inputs, tmp_path, capsys):
    every2 = write_config(tmp_path / "every2.yaml", save_steps=2)  # checkpoint frequency is not part of the run
    out = tmp_path / "run"
    partial = interrupted_spectrum_run(tiny_llama, inputs["data"], every2, inputs["selection"], out, 5)
    newest = partial / "checkpoints" / "checkpoint-4"
    optimizer = newest / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[: optimizer.stat().st_size // 2])  # killed while writing
    capsys.readouterr()
    metrics, _ = train(tiny_llama, "spectrum", inputs["data"], out, selection=inputs["selection"], config=every2,
                       resume=True)
    said = capsys.readouterr().out
    assert "--resume: skipping checkpoint-4, a half-written checkpoint (optimizer.pt is missing or incomplete)" in said
    assert f"resuming from {partial / 'checkpoints' / 'checkpoint-2'}" in said
    assert metrics["details"]["resumed_from_step"] == 2 and metrics["details"]["global_step"] == 6
    resumed, straight = load_file(out / "spectrum_delta.safetensors"), load_file(spectrum_run[0] / "spectrum_delta.safetensors")
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=1e-5, atol=1e-6)


def test_metrics_count_truncated_and_dropped_examples(tiny_llama, inputs, tmp_path, capsys):
    """16 rows, 2 held out; at max_seq_length 48 the longer answers are cut, one long prompt loses its answer."""
    from snrtune.training import sft_data

    rows = [json.loads(line) for line in inputs["data"].read_text().splitlines()]
    rows[5] = {**rows[5], "instruction": "tell me " * 40 + rows[5]["instruction"]}
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = write_config(tmp_path / "short.yaml", max_seq_length=48, max_steps=1)
    metrics, _ = train(tiny_llama, "lora", data, tmp_path / "run", config=config)
    cfg = metrics["config"]
    train_rows, _ = sft_data.split_validation(rows, cfg["val_fraction"], cfg["seed"])
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_llama)
    lengths = [len(tokenizer.apply_chat_template(sft_data.to_messages(r, "alpaca"), tokenize=True)["input_ids"])
               for r in train_rows]
    long_prompt = [r is rows[5] or r == rows[5] for r in train_rows]
    expected_truncated = sum(1 for n, skip in zip(lengths, long_prompt) if n >= 48 and not skip)
    assert any(long_prompt)  # the row that loses its answer is a training row for this seed
    assert metrics["data"]["dropped"] == 1 and metrics["data"]["truncated"] == expected_truncated > 0
    assert metrics["data"]["rows"] == 16 and metrics["data"]["train_examples"] + metrics["data"]["val_examples"] == 15
    assert metrics["data"]["format"] == "alpaca" and metrics["data"]["kind"] == "local"
    assert (f"{expected_truncated} reach max_seq_length=48 (cut or exactly that long), 1 dropped "
            "(no response token left)" in capsys.readouterr().out)


def test_training_arguments_are_built_before_the_model_is_loaded(tiny_llama, inputs, tmp_path, monkeypatch):
    """ZeRO-3 partitioned loading (HfDeepSpeedConfig) and FSDP's cpu_ram_efficient_loading are set up by the
    TrainingArguments; from_pretrained only sees them if the arguments exist first."""
    from pathlib import Path

    class Loaded(Exception):
        pass

    seen = {}

    def prepare(*args, **kwargs):
        seen["fsdp_loading"] = os.environ.get("FSDP_CPU_RAM_EFFICIENT_LOADING")
        raise Loaded

    monkeypatch.delenv("FSDP_CPU_RAM_EFFICIENT_LOADING", raising=False)
    monkeypatch.setattr(methods, "prepare", prepare)
    # fsdp in one process is refused before anything loads (settings_fit); this test looks at the order only
    monkeypatch.setattr("snrtune.training.train.check_settings_fit", lambda *args, **kwargs: None)
    fsdp_yaml = Path(__file__).parents[2] / "config" / "fsdp.yaml"
    cfg = write_config(tmp_path / "c.yaml", fsdp=True, fsdp_config=str(fsdp_yaml))
    with pytest.raises(Loaded):
        train(tiny_llama, "full", inputs["data"], tmp_path / "r", config=cfg)
    assert seen == {"fsdp_loading": "true"}  # config/fsdp.yaml's cpu_ram_efficient_loading, already applied


def test_a_log_file_gets_one_plain_line_per_logging_step(tiny_llama, inputs, tmp_path):
    """stdout/stderr to a file (a SLURM log, not a terminal): step, loss, lr, tokens/s and ETA on one line per
    logging step, and no tqdm carriage-return frames."""
    import re
    import subprocess
    import sys

    cfg = write_config(tmp_path / "c.yaml", max_steps=3, val_fraction=0.0, save_steps=100)
    cmd = [sys.executable, "-m", "snrtune.cli", "train", str(tiny_llama), "--method", "spectrum", "--data",
           str(inputs["data"]), "--selection", str(inputs["selection"]), "--config", str(cfg),
           "--out", str(tmp_path / "r")]
    with open(tmp_path / "train.log", "w") as log:
        result = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    text = (tmp_path / "train.log").read_text()
    assert result.returncode == 0, text[-3000:]
    assert "\r" not in text
    lines = [line for line in text.splitlines() if line.startswith("step ")]
    assert len(lines) == 3, text
    for step, line in enumerate(lines, 1):
        assert re.fullmatch(rf"step {step}/3 \| loss \d+\.\d{{4}} \| lr 1\.00e-02 \| \d+ tokens/s \| ETA \d+:\d\d:\d\d",
                            line), line
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert [f"{loss:.4f}" for _, loss in metrics["train_loss"]] == [line.split(" | ")[1][5:] for line in lines]


def test_zero3_partitioned_loading_is_on_when_the_model_loads(tiny_llama, inputs, tmp_path, monkeypatch):
    """With config/zero3.json, transformers' HfDeepSpeedConfig exists (from the SFTConfig) before from_pretrained,
    which then loads each rank's partition only (zero.Init). Runs where deepspeed is installed."""
    from pathlib import Path

    pytest.importorskip("deepspeed")
    from transformers.integrations import is_deepspeed_zero3_enabled
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    class Loaded(Exception):
        pass

    seen = {}

    def prepare(*args, **kwargs):
        seen["zero3"] = is_deepspeed_zero3_enabled()
        raise Loaded

    monkeypatch.setattr(methods, "prepare", prepare)
    zero3 = Path(__file__).parents[2] / "config" / "zero3.json"
    cfg = write_config(tmp_path / "c.yaml", deepspeed=str(zero3))
    assert not is_deepspeed_zero3_enabled()
    try:
        with pytest.raises(Loaded):
            train(tiny_llama, "full", inputs["data"], tmp_path / "r", config=cfg)
    finally:
        unset_hf_deepspeed_config()  # the traceback keeps the arguments alive: no ZeRO-3 for later tests
    assert seen == {"zero3": True}
