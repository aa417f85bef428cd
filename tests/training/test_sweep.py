"""The learning-rate sweep picks the candidate with the lowest held-out validation loss."""

import json

import pytest

from snrtune.cli import main
from snrtune.errors import SnrtuneError
from snrtune.training.sweep import choose, pick


def make_candidate(root, lr, eval_losses, run_id="m/lora-s0"):
    """A finished lora run directory (its record, metrics and adapter files) at learning rate ``lr``."""
    import torch
    from safetensors.torch import save_file

    run = root / f"lr{lr:g}"
    run.mkdir(parents=True)
    identity = {"id": run_id, "model": "m", "method": "lora", "seed": 0}
    metrics = {"run": identity, "config": {"learning_rate": lr},
               "train_loss": [[1, 2.0], [24, 1.0]], "eval_loss": [[24, v] for v in eval_losses],
               "trainable_params": 10}
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "snrtune_run.json").write_text(json.dumps(identity))
    (run / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    save_file({"lora_A": torch.full((2,), lr)}, str(run / "adapter_model.safetensors"))
    return run


def test_pick_takes_the_argmin_of_the_final_validation_loss_and_links_its_files(tmp_path):
    # hand-made losses: 1e-3 is best at the end although 3e-3 was better at an earlier evaluation
    runs = [make_candidate(tmp_path, 3e-4, [1.9, 1.5]), make_candidate(tmp_path, 1e-3, [1.6, 1.2]),
            make_candidate(tmp_path, 3e-3, [1.1, 1.3])]
    out = tmp_path / "final"
    assert main(["pick", *map(str, runs), "--out", str(out)]) == 0
    table = json.loads((out / "sweep.json").read_text())
    assert table["chosen"]["learning_rate"] == 1e-3
    assert [(row["learning_rate"], row["eval_loss"], row["chosen"]) for row in table["candidates"]] == [
        (3e-4, 1.5, False), (1e-3, 1.2, True), (3e-3, 1.3, False)]
    assert (out / "adapter_model.safetensors").read_bytes() == (runs[1] / "adapter_model.safetensors").read_bytes()
    assert (out / "adapter_model.safetensors").stat().st_ino == (runs[1] / "adapter_model.safetensors").stat().st_ino


def test_ties_go_to_the_smaller_learning_rate_and_nonfinite_losses_never_win():
    rows = [{"id": "r", "learning_rate": 2e-3, "eval_loss": 1.0}, {"id": "r", "learning_rate": 1e-3, "eval_loss": 1.0},
            {"id": "r", "learning_rate": 5e-3, "eval_loss": None}]
    assert choose(rows)["learning_rate"] == 1e-3


def test_a_sweep_without_validation_loss_is_a_one_line_error(tmp_path, capsys):
    runs = [make_candidate(tmp_path, 1e-3, []), make_candidate(tmp_path, 2e-3, [])]
    out = tmp_path / "final"
    assert main(["pick", *map(str, runs), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "val_fraction > 0" in err
    assert not out.exists()


def test_candidates_of_different_runs_are_refused(tmp_path):
    runs = [make_candidate(tmp_path, 1e-3, [1.0]), make_candidate(tmp_path, 2e-3, [1.0], run_id="m/full-s0")]
    with pytest.raises(SnrtuneError, match="different runs"):
        pick(runs, tmp_path / "final")
