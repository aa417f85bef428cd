"""Bad inputs to `snrtune merge` and `snrtune pick`: broken base models, broken or foreign run directories,
adapters and spectrum deltas that do not fit their base, sweep candidates that are not complete runs. Each: one
line, exit 2, before any model loads, no MERGED_DIR / RUN_DIR (docs/checks.md)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from bad_input_cases import (check_bad_model, copy_model, lora_run, model_cases, one_error_line, refused, truncate)
from safetensors.torch import load_file, save_file
from train_data import write_selection

from snrtune.cli import main
from snrtune.model_dir import weights_fingerprint

torch.set_num_threads(1)


@pytest.mark.parametrize("case", model_cases("merge"))
def test_bad_base_model_directory(case, tiny_llama, tmp_path, capsys):
    check_bad_model(case, "merge", tiny_llama, tmp_path, capsys)


def test_the_weights_fingerprint_follows_the_bytes_not_the_files(tiny_llama, tmp_path):
    """A copy (new file times) has the base's fingerprint; the same shapes with one matrix trained do not."""
    copy = copy_model(tiny_llama, tmp_path / "copy")
    assert weights_fingerprint(copy) == weights_fingerprint(tiny_llama)
    tensors = load_file(str(copy / "model.safetensors"))
    name = "model.layers.1.self_attn.q_proj.weight"
    tensors[name] = tensors[name] + 1e-3
    save_file(tensors, str(copy / "model.safetensors"), metadata={"format": "pt"})
    assert weights_fingerprint(copy) != weights_fingerprint(tiny_llama)


# ---------------------------------------------------------------- broken runs, another base

def spectrum_run(path: Path, base: Path) -> Path:
    run = lora_run(path, base)
    record = json.loads((run / "snrtune_run.json").read_text())
    (run / "snrtune_run.json").write_text(json.dumps({**record, "method": "spectrum"}))
    save_file({"model.layers.1.self_attn.q_proj.weight": torch.zeros(64, 64)}, str(run / "spectrum_delta.safetensors"))
    return run


def delta(run: Path, tensors: dict) -> Path:
    save_file(tensors, str(run / "spectrum_delta.safetensors"))
    return run


def full_run(path: Path, base: Path) -> Path:
    copy_model(base, path)
    record = {"id": "tiny-llama/full-s0", "model": "tiny-llama", "method": "full", "seed": 0,
              "base_fingerprint": weights_fingerprint(base)}
    (path / "snrtune_run.json").write_text(json.dumps(record))
    (path / "metrics.json").write_text("{}")
    return path


def other_base(base: Path, tmp: Path) -> Path:
    """The same architecture and shapes, other weights (another model, or another run's merged output)."""
    other = copy_model(base, tmp / "other")
    tensors = load_file(str(other / "model.safetensors"))
    save_file({k: v * 0.5 for k, v in tensors.items()}, str(other / "model.safetensors"), metadata={"format": "pt"})
    return other


def rewrite(path: Path, text: str) -> Path:
    """Replace a run file's text; returns the run directory."""
    path.write_text(text)
    return path.parent


# case: (make the run directory (path, base) -> run, make the base (tiny model, tmp) -> base, words)
RUN_CASES = {
    "snrtune_run.json not JSON": (lambda p, b: rewrite(lora_run(p, b) / "snrtune_run.json", "{oops"), None, ["snrtune_run.json", "is not valid JSON"]),
    "snrtune_run.json without method": (
        lambda p, b: rewrite(lora_run(p, b) / "snrtune_run.json", '{"id": "x", "model": "m"}'), None,
        ["snrtune_run.json", "key 'method'"]),
    "half-written lora run": (lambda p, b: (lora_run(p, b) / "adapter_model.safetensors").unlink() or p, None,
                              ["has no adapter_model.safetensors", "incomplete"]),
    "no metrics.json": (lambda p, b: (lora_run(p, b) / "metrics.json").unlink() or p, None,
                        ["metrics.json", "does not exist"]),
    "truncated spectrum delta": (lambda p, b: truncate(spectrum_run(p, b) / "spectrum_delta.safetensors") or p,
                                 None, ["spectrum_delta.safetensors", "not a valid safetensors file"]),
    "full run with a truncated model.safetensors": (
        lambda p, b: truncate(full_run(p, b) / "model.safetensors") or p, None,
        ["run/model.safetensors", "not a valid safetensors file"]),
    "lora run onto another base": (lora_run, other_base, ["is not the model run 'tiny-llama/lora-s0'", "other",
                                                          "fingerprint"]),
    "spectrum run onto another base": (spectrum_run, other_base, ["is not the model run", "other"]),
    "spectrum delta stored as I32": (
        lambda p, b: delta(spectrum_run(p, b), {"model.layers.1.self_attn.q_proj.weight": torch.zeros(64, 64,
                                                                                                     dtype=torch.int32)}),
        None, ["spectrum_delta.safetensors", "tensor 'model.layers.1.self_attn.q_proj.weight' is stored as I32"]),
    "spectrum delta of a tensor the base lacks": (
        lambda p, b: delta(spectrum_run(p, b), {"model.layers.9.self_attn.q_proj.weight": torch.zeros(64, 64)}),
        None, ["tensor 'model.layers.9.self_attn.q_proj.weight' is not a parameter of the base"]),
    "spectrum delta of another shape": (
        lambda p, b: delta(spectrum_run(p, b), {"model.layers.1.self_attn.q_proj.weight": torch.zeros(32, 64)}),
        None, ["tensor 'model.layers.1.self_attn.q_proj.weight' is [32, 64], the base's [64, 64]"]),
    "spectrum delta without what its selection trains": (
        lambda p, b: write_selection(spectrum_run(p, b) / "selection.yaml") and p, None,
        ["spectrum_delta.safetensors' does not hold what its selection (selection.yaml) trains",
         "1 missing (model.layers.2.mlp.down_proj.weight)"]),
}


@pytest.mark.parametrize("case", list(RUN_CASES))
def test_bad_run_directory_or_base_for_merge(case, tiny_llama, tmp_path, capsys):
    make_run, make_base, words = RUN_CASES[case]
    run = make_run(tmp_path / "run", tiny_llama)
    base = make_base(tiny_llama, tmp_path) if make_base else tiny_llama
    out = tmp_path / "merged"
    assert main(["merge", str(run), "--base", str(base), "--out", str(out)]) == 2
    err = one_error_line(capsys, "merge")
    for word in words:
        assert word in err, err
    assert not out.exists() and not list(tmp_path.glob(".merged.tmp-*"))




# ---------------------------------------------------------------- adapters that do not fit their base

@pytest.fixture(scope="module")
def adapter_run(tiny_llama, tmp_path_factory):
    """A lora run directory as `snrtune train` leaves it: PEFT's adapter (r 4 on every linear layer: 28 modules of
    the tiny Llama) and the run's record naming tiny_llama as its base."""
    import peft
    import transformers

    run = tmp_path_factory.mktemp("adapter") / "run"
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_llama)
    peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                               task_type="CAUSAL_LM")).save_pretrained(run)
    (run / "snrtune_run.json").write_text(json.dumps({"id": "tiny-llama/lora-s0", "model": "tiny-llama",
                                                      "method": "lora", "seed": 0,
                                                      "base_fingerprint": weights_fingerprint(tiny_llama)}))
    (run / "metrics.json").write_text('{"status": "finished"}')
    return run


def adapter_config(run: Path, **changes) -> None:
    config = json.loads((run / "adapter_config.json").read_text())
    config.update(changes)
    (run / "adapter_config.json").write_text(json.dumps(config))


def adapter_tensors(run: Path, change) -> None:
    tensors = load_file(str(run / "adapter_model.safetensors"))
    save_file(change(tensors), str(run / "adapter_model.safetensors"))


A = "base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight"
# case: (change to a copy of the adapter run, words the one line must contain)
ADAPTER_CASES = {
    "an adapter missing all but one tensor": (
        lambda r: adapter_tensors(r, lambda t: {A: t[A]}),
        ["adapter_model.safetensors' lacks the LoRA weights of 28 of the 28 modules", "the adapter is incomplete"]),
    "target_modules the base lacks": (lambda r: adapter_config(r, target_modules=["q_proj", "nonexistent_proj"]),
                                      ["adapter_config.json': key 'target_modules': 'nonexistent_proj' is not a module "
                                       "of the base model"]),
    "a string lora_alpha": (lambda r: adapter_config(r, lora_alpha="16"),
                            ["adapter_config.json': key 'lora_alpha' is '16'; expected a number > 0"]),
    "r: 0": (lambda r: adapter_config(r, r=0), ["adapter_config.json': key 'r' is 0; expected an integer >= 1"]),
    "LoRA weights of another shape": (
        lambda r: adapter_tensors(r, lambda t: {**t, A: torch.zeros(4, 32)}),
        ["the LoRA weights of model.layers.0.self_attn.k_proj (A [4, 32], B [32, 4]; the base's weight is [32, 64]) "
         "do not fit the base"]),
}


@pytest.mark.parametrize("case", list(ADAPTER_CASES))
def test_an_adapter_that_does_not_fit_its_base(case, adapter_run, tiny_llama, tmp_path, capsys):
    change, words = ADAPTER_CASES[case]
    run = shutil.copytree(adapter_run, tmp_path / "run")
    change(run)
    refused(["merge", run, "--base", tiny_llama, "--out", tmp_path / "merged"], capsys, *words)
    assert not (tmp_path / "merged").exists() and not list(tmp_path.glob(".merged.tmp-*"))


def test_the_adapter_fixture_merges(adapter_run, tiny_llama, tmp_path, capsys):
    """The unchanged adapter passes every check (the cases above differ from it by one change)."""
    assert main(["merge", str(adapter_run), "--base", str(tiny_llama), "--out", str(tmp_path / "merged")]) == 0
    assert (tmp_path / "merged/model.safetensors").is_file()
    capsys.readouterr()


# ---------------------------------------------------------------- pick: sweep candidates

def candidate(root: Path, lr: float, status: str = "finished", eval_loss=((1, 1.0),), train_loss=((1, 2.0),),
              weights: bool = True) -> Path:
    run = root / f"lr{lr:g}"
    run.mkdir(parents=True)
    identity = {"id": "m/lora-s0", "model": "m", "method": "lora", "seed": 0}
    (run / "snrtune_run.json").write_text(json.dumps(identity))
    (run / "metrics.json").write_text(json.dumps({
        "run": identity, "config": {"learning_rate": lr}, "status": status,
        "train_loss": [list(p) for p in train_loss], "eval_loss": [list(p) for p in eval_loss]}))
    (run / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    if weights:
        save_file({"lora_A": torch.zeros(2)}, str(run / "adapter_model.safetensors"))
    return run


# case: (keyword arguments of the bad candidate, words the one line must contain)
PICK_CASES = {
    "a candidate without its adapter weights": ({"weights": False},
                                                ["has no adapter_model.safetensors: the run is incomplete"]),
    "a negative learning rate": ({"lr": -1e-3}, ["key 'config.learning_rate' is -0.001; expected the positive"]),
    "an unknown status": ({"status": "maybe"}, ["key 'status' is 'maybe'; expected one of finished, diverged"]),
    "a step that is not a number": ({"train_loss": (("1", 2.0),)}, ["key 'train_loss' is not a list of [step, loss]"]),
    "a loss that is not a number": ({"eval_loss": ((1, "low"),)}, ["key 'eval_loss' is not a list of [step, loss]"]),
}


@pytest.mark.parametrize("case", list(PICK_CASES))
def test_a_bad_sweep_candidate(case, tmp_path, capsys):
    changes, words = PICK_CASES[case]
    good = candidate(tmp_path, 1e-4)
    bad = candidate(tmp_path, **{"lr": 3e-4, **changes})
    refused(["pick", good, bad, "--out", tmp_path / "chosen"], capsys, "metrics.json" if "weights" not in changes
            else "lr", *words)
    assert not (tmp_path / "chosen").exists()


def test_pick_never_chooses_a_diverged_candidate(tmp_path, capsys):
    def make(lr, eval_loss, status):
        return str(candidate(tmp_path, lr, status, eval_loss, [[1, 2.0], [2, None if status == "diverged" else 1.5]]))

    # the diverged one has the lowest validation loss, logged before its loss became NaN
    runs = [make(1e-3, [[2, 2.0]], "finished"), make(1e-1, [[1, 0.5]], "diverged"), make(1.0, [[1, None]], "diverged")]
    assert main(["pick", *runs, "--out", str(tmp_path / "chosen")]) == 0
    assert json.loads((tmp_path / "chosen/sweep.json").read_text())["chosen"]["learning_rate"] == 1e-3
    capsys.readouterr()
    # every learning rate diverged: the smallest one's run, as diverged, so the report can show the method
    assert main(["pick", *runs[1:], "--out", str(tmp_path / "all")]) == 0
    assert capsys.readouterr().err == (f"snrtune pick: warning: every candidate diverged; {tmp_path / 'all'} is the "
                                       "smallest learning rate's run (0.1) with status diverged\n")
    assert json.loads((tmp_path / "all/metrics.json").read_text())["status"] == "diverged"
