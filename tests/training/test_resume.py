"""Which partial run `snrtune train --resume` continues: fingerprints and complete checkpoints (no training here;
the training scenarios are in tests/training/test_train.py)."""

from __future__ import annotations

import json

import torch
from safetensors.torch import save_file

from snrtune.training import resume


def fingerprint(tmp_path, lr=1e-4, data="d" * 64, selection=None):
    model = tmp_path / "model"
    if not model.exists():
        model.mkdir()
        (model / "config.json").write_text('{"model_type": "llama"}')
        save_file({"w": torch.zeros(2, 2)}, model / "model.safetensors")
    cfg = {"learning_rate": lr, "seed": 0, "save_steps": 100, "save_total_limit": 2}
    return resume.run_fingerprint(cfg, "lora", "sft", None, data, selection, model)


def test_the_fingerprint_changes_with_what_defines_the_run_and_names_it(tmp_path):
    base = fingerprint(tmp_path)
    assert fingerprint(tmp_path) == base
    assert resume.changes(base, fingerprint(tmp_path, lr=2e-4)) == "settings (learning_rate)"
    assert resume.changes(base, fingerprint(tmp_path, data="e" * 64)) == "data"
    sel = tmp_path / "sel.yaml"
    sel.write_text("unfrozen_parameters: [a]\n")
    assert resume.changes(base, fingerprint(tmp_path, selection=sel)) == "selection"
    (tmp_path / "model" / "config.json").write_text('{"model_type": "mistral"}')
    assert resume.changes(base, fingerprint(tmp_path)) == "model"
    # where and how often checkpoints are written does not define the run
    cfg = {"learning_rate": 1e-4, "seed": 0, "save_steps": 7, "save_total_limit": 5}
    again = resume.run_fingerprint(cfg, "lora", "sft", None, "d" * 64, None, tmp_path / "model")
    assert again["parts"]["settings"] == base["parts"]["settings"]


def test_a_partial_run_without_a_fingerprint_starts_afresh(tmp_path):
    partial = tmp_path / "run.partial"
    (partial / "checkpoints" / "checkpoint-3").mkdir(parents=True)
    last, notes = resume.resume_point(partial, fingerprint(tmp_path), resume=True, is_main=True)
    assert last is None and not partial.exists()
    assert notes == ["--resume: run.partial records no fingerprint (an older snrtune made it); starting afresh"]


def fake_checkpoint(path, step, optimizer=True):
    path.mkdir(parents=True)
    save_file({"w": torch.zeros(2, 2)}, path / "adapter_model.safetensors")
    for name in ("scheduler.pt", "rng_state.pth") + (("optimizer.pt",) if optimizer else ()):
        torch.save({"x": 1}, path / name)
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))


def test_newest_complete_checkpoint_skips_half_written_ones(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    fake_checkpoint(checkpoints / "checkpoint-10", 10)
    fake_checkpoint(checkpoints / "checkpoint-20", 20, optimizer=False)
    fake_checkpoint(checkpoints / "checkpoint-30", 30)
    weights = checkpoints / "checkpoint-30" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4])  # cut while writing
    fake_checkpoint(checkpoints / "checkpoint-40", 40)
    (checkpoints / "checkpoint-40" / "trainer_state.json").unlink()  # the Trainer writes it last
    last, notes = resume.newest_complete_checkpoint(checkpoints)
    assert last == checkpoints / "checkpoint-10"
    assert notes == ["--resume: skipping checkpoint-40, a half-written checkpoint (no trainer_state.json)",
                     "--resume: skipping checkpoint-30, a half-written checkpoint (adapter_model.safetensors is incomplete)",
                     "--resume: skipping checkpoint-20, a half-written checkpoint (optimizer.pt is missing or incomplete)"]
    assert resume.checkpoint_problem(checkpoints / "checkpoint-10") is None
