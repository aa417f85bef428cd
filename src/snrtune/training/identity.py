"""What run this is: the model's name, the parameter count a selection must state, and snrtune_run.json's
identity in the run-id grammar of snrtune.naming. Light (no torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from snrtune import method_registry, naming
from snrtune.artifact_names import RUN_FILE
from snrtune.model_dir import load_source_info, read_run_record


def selection_total_params(model_dir, entries: dict) -> int:
    """The model's parameter count as `snrtune scan` states it in snr.json (and select in sel.yaml): over the
    runtime parameter table (snrtune.fetch.params), or the checkpoint's tensors where there is none."""
    import math

    from snrtune.fetch.params import parameter_table

    table = parameter_table(model_dir, list(entries))
    shapes = table["parameters"].values() if table else [entry.shape for entry in entries.values()]
    return sum(math.prod(shape) for shape in shapes)


def model_name(model_dir) -> str:
    return load_source_info(model_dir)["name"]


def run_identity(model_dir, method: str, selection: dict | None, seed: int, stage: str) -> dict[str, Any]:
    """snrtune_run.json, its id in the run-id grammar of snrtune.naming: ``{model}/{method}[-t{T}|-b{B}]-s{seed}[-dpo]``."""
    name = model_name(model_dir)
    with_selection = selection is not None and method_registry.get(method).needs_selection
    top = selection.get("top_percent") if with_selection else None
    budget = selection.get("budget_params") if with_selection and top is None else None
    run_id = f"{name}/" + naming.format_run(method, seed, t=top, budget=budget, stage=stage)  # as the workflow names runs
    identity = {"id": run_id, "model": name, "method": method, "top_percent": top, "seed": seed, "stage": stage}
    parent = Path(model_dir) / RUN_FILE  # a DPO stage usually starts from a merged SFT run
    if stage == "dpo" and parent.is_file():
        identity["from_run"] = read_run_record(parent)["id"]
    return identity
