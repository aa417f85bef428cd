"""What `snrtune train` writes into RUN_DIR: the weights the method's merge needs, the tokenizer, the parts of
metrics.json taken from the trainer and the selection, and the finished run directory itself."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from snrtune import method_registry
from snrtune.artifact_names import (ATTEMPTS_FILE, CHECKPOINTS_DIR, DELTA_FILE, METRICS_FILE, ROWS_DIR, RUN_FILE,
                                    SELECTION_COPY, TRAINER_PICKLE)
from snrtune.fileio import Owner, atomic_dir, json_safe, write_json
from snrtune.training.resume import FINGERPRINT


def spectrum_delta(trainer) -> dict[str, Any]:
    """The trained tensors by their named_parameters() names (gathered when the model is sharded)."""
    model = trainer.model
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    if trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled:
        state = trainer.accelerator.get_state_dict(trainer.model_wrapped) or {}  # ZeRO-3 gathers on rank 0 only
        return {n: t.detach().cpu().contiguous() for n, t in state.items() if n in trained}
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if n in trained}


def save_weights(trainer, spec: method_registry.MethodSpec, out: Path, selection_path, is_main: bool) -> None:
    """As the method's merge strategy needs: "spectrum-delta": the trained tensors (+ the selection, if any);
    "adapter": the PEFT adapter; "full-copy": the whole model."""
    if spec.merge == "spectrum-delta":
        from safetensors.torch import save_file

        delta = spectrum_delta(trainer)
        if is_main:
            save_file(delta, str(out / DELTA_FILE), metadata={"format": "pt"})
            if selection_path is not None:
                shutil.copyfile(selection_path, out / SELECTION_COPY)
        return
    trainer.save_model(str(out))  # adapter_model.safetensors for PEFT models, a full model directory otherwise
    if is_main:
        (out / TRAINER_PICKLE).unlink(missing_ok=True)  # a pickle; the settings are in metrics.json


def save_tokenizer(tokenizer, out: Path) -> None:
    """The tokenizer and chat template the run trained with (chat_template.jinja), for merge and evaluate."""
    tokenizer.save_pretrained(str(out))


def losses(log_history: list[dict], key: str) -> list[list]:
    return [[entry["step"], entry[key]] for entry in log_history if key in entry]


def selection_summary(selection: dict | None, path) -> dict | None:
    if selection is None:
        return None
    keys = ("model", "selection", "seed", "top_percent", "budget_params", "trainable_params", "total_params",
            "unfrozen_parameters")  # selection: snr, or a control (random with its seed, lowest)
    return {"file": str(path), **{k: selection.get(k) for k in keys},
            "target_modules": selection.get("exports", {}).get("peft", {}).get("target_modules")}


def write_run_dir(out: Path, identity: dict, metrics: dict) -> None:
    """RUN_DIR.partial, less what only training and resuming need, renamed to RUN_DIR with snrtune_run.json and
    metrics.json."""
    with atomic_dir(out, Owner("train"), keep_partial=True) as tmp:
        shutil.rmtree(tmp / CHECKPOINTS_DIR, ignore_errors=True)
        (tmp / FINGERPRINT).unlink(missing_ok=True)
        (tmp / ATTEMPTS_FILE).unlink(missing_ok=True)  # its totals are in metrics.json
        shutil.rmtree(tmp / ROWS_DIR, ignore_errors=True)  # the data rows and their tokenization cache
        write_json(tmp / RUN_FILE, identity)
        write_json(tmp / METRICS_FILE, json_safe(metrics))  # a diverged run's non-finite losses as null
