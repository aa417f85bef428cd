"""`snrtune fetch`: local directories, GGUF from a package, hub ids offline, and clean failures."""

import json

import pytest
import torch
import transformers

from snrtune.cli import main
from snrtune.errors import SnrtuneError
from snrtune.fetch.model import default_name, fetch
from snrtune.spectrum.scan import scan
from snrtune.spectrum.select import select


def test_local_directory_is_linked_with_a_source_record(tiny_llama, tmp_path):
    out = fetch(str(tiny_llama), tmp_path / "model")
    assert (out / "model.safetensors").is_symlink()
    assert json.loads((out / "snrtune_source.json").read_text())["kind"] == "local"
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert model.config.model_type == "llama"


@pytest.mark.parametrize("make_source, message", [
    (lambda p: p / "nowhere", "not found"),
    (lambda p: (p / "notes.txt").write_text("hi") and p / "notes.txt", "unsupported model file"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "not a model directory: it has no config.json"),
    (lambda p: "pkg://no_such_package_xyz/model.gguf", "is not installed"),
])
def test_bad_sources_fail_with_one_line_and_no_output(make_source, message, tmp_path, capsys):
    source = make_source(tmp_path)
    assert main(["fetch", str(source), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp")]


def test_pickle_only_directory_needs_allow_pickle(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "config.json").write_text("{}")
    (tmp_path / "src" / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(SnrtuneError, match="--allow-pickle"):
        fetch(str(tmp_path / "src"), tmp_path / "out")


@pytest.mark.parametrize("offline", ["1", "0"])
def test_hub_id_without_network_gives_a_clear_error(offline, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", offline)  # "0": the real download code meets the closed network
    with pytest.raises(SnrtuneError, match="cannot download 'meta-llama/Meta-Llama-3-8B'"):
        fetch("meta-llama/Meta-Llama-3-8B", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_default_names():
    assert default_name("gguf", "/x/SmolLM2-135M-Instruct.Q4_1.gguf") == "SmolLM2-135M-Instruct"
    assert default_name("hub", "meta-llama/Meta-Llama-3-8B") == "Meta-Llama-3-8B"


@pytest.mark.slow
def test_smollm2_from_the_package_answers_scans_and_selects(smollm2_dir, tmp_path):
    """End to end on a real pretrained model: GGUF in a pip package → safetensors → scan → select 25/50."""
    assert json.loads((smollm2_dir / "snrtune_source.json").read_text())["name"] == "SmolLM2-135M-Instruct"
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config
    tokenizer = transformers.AutoTokenizer.from_pretrained(smollm2_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    answer = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(answer[0, prompt["input_ids"].shape[1]:])

    result = scan(smollm2_dir, tmp_path / "snr.json")
    q_proj = [m for m in result["modules"] if m["type"] == "self_attn.q_proj"]
    assert len(q_proj) == 30 and result["total_params"] == sum(p.numel() for p in model.parameters())
    assert result["tied"] == {"lm_head.weight": "model.embed_tokens.weight"}
    sel25, sel50 = select(result, top_percent=25), select(result, top_percent=50)
    assert len(sel25["modules"]) == 7 * 7 and len(sel50["modules"]) == 7 * 15  # floor(30 * t / 100) per type
    assert {m["name"] for m in sel25["modules"]} <= {m["name"] for m in sel50["modules"]}
    assert 0 < sel25["trainable_fraction"] < sel50["trainable_fraction"] < 0.6
