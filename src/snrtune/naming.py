"""Names derived from values, in one place: the t value in file names and run ids, run names and their
inverse, the report's variant labels, and module names from parameter names.

Light (no torch): both ``snrtune.training.identity`` and the workflow's ``snrtune.workflow.config`` import it.
"""

from __future__ import annotations

from typing import Any

from snrtune import method_registry
from snrtune.errors import SnrtuneError


def t_value(t: float | None) -> float | int | None:
    """25.0 -> 25 (an integral t as an int, so YAML, JSON and run ids read naturally); None stays None."""
    return int(t) if t is not None and float(t).is_integer() else t


def format_t(t: float) -> str:
    """25 -> '25', 12.5 -> '12.5' (the t as it appears in file names, run ids and report labels)."""
    return str(t_value(float(t)))


# The run-id grammar (docs/artifacts.md): METHOD[-tT | -bBUDGET]-sSEED[-dpo]. The workflow's runs use the
# METHOD[-tT]-sSEED part; a budget selection (`select --budget-fraction`) and a DPO stage add the rest.
BASE_RUN = "base"  # the untouched model's eval/base.json
T_PATTERN = r"\d+(\.\d+)?"  # a t value as format_t writes it
RUN_PATTERN = rf"[a-z-]+(-t{T_PATTERN})?-s\d+"  # a workflow run name, for Snakemake's wildcard constraints
DPO_SUFFIX = "-dpo"


def format_run(method: str, seed: int, t: float | None = None, budget: int | None = None, stage: str = "sft") -> str:
    """'spectrum-t25-s0', 'spectrum-b1000000-s0', 'qlora-s0', 'lora-s0-dpo': every run kind in one grammar."""
    if t is not None and budget is not None:
        raise ValueError("a run has a t value or a parameter budget, not both")
    name = method + (f"-t{format_t(t)}" if t is not None else f"-b{int(budget)}" if budget is not None else "")
    return f"{name}-s{int(seed)}" + (DPO_SUFFIX if stage == "dpo" else "")


def parse_run_id(run: str) -> dict[str, Any]:
    """Inverse of format_run: {'method', 'top_percent' (a string, or None), 'budget_params' (int or None),
    'seed', 'stage'}."""
    stage = "dpo" if run.endswith(DPO_SUFFIX) else "sft"
    head, _, seed = run.removesuffix(DPO_SUFFIX).rpartition("-s")
    if not head or not seed.isdigit():
        raise SnrtuneError(f"run name {run!r}: expected METHOD-tT-sSEED or METHOD-sSEED")
    parsed = {"method": head, "top_percent": None, "budget_params": None, "seed": int(seed), "stage": stage}
    for method in sorted(method_registry.selection_names(), key=len, reverse=True):  # the longest name first
        for marker, key in (("-t", "top_percent"), ("-b", "budget_params")):
            rest = head[len(method) + 2:]
            if head.startswith(method + marker) and (key == "top_percent" or rest.isdigit()):
                return {**parsed, "method": method, key: rest if key == "top_percent" else int(rest)}
    return parsed


def run_name(method: str, t: float | None, seed: int) -> str:
    """'spectrum-t25-s0' for methods with a selection, 'qlora-s0' otherwise: a workflow run (docs/artifacts.md)."""
    if method_registry.get(method).needs_selection:
        return format_run(method, seed, t=t)
    return format_run(method, seed)


def parse_run(run: str) -> dict[str, Any]:
    """Inverse of run_name: {'method', 'top_percent' (a string, or None), 'seed'}. A budget or DPO run id is not
    a workflow run name: one line says so."""
    parsed = parse_run_id(run)
    if parsed["budget_params"] is not None or parsed["stage"] != "sft":
        raise SnrtuneError(f"run name {run!r}: a workflow run is METHOD-tT-sSEED or METHOD-sSEED "
                           "(budget selections and DPO stages are named by `snrtune train` only)")
    return {key: parsed[key] for key in ("method", "top_percent", "seed")}


def variant_label(run: dict) -> str:
    """The method as the report compares it: its label, with the t value when it has one
    (``spectrum-t25``, ``lora``, ``base``)."""
    spec = method_registry.find(run["method"])
    label = spec.label if spec else run["method"]
    t = run.get("top_percent")
    return f"{label}-t{format_t(t)}" if t is not None else label


def module_name(param: str) -> str:
    """The module a parameter belongs to when it is the module's weight: 'a.b.q_proj.weight' -> 'a.b.q_proj';
    any other name is returned unchanged."""
    return param.removesuffix(".weight")


def model_slug(model: str | None) -> str:
    """A model name as a file name: every character but letters, digits and ``-._`` replaced by ``_`` (the
    report's plot files; `snrtune fetch` takes only names that are their own slug, so two never collide)."""
    return "".join(ch if ch.isalnum() or ch in "-._" else "_" for ch in str(model or "model"))


def check_model_name(name: str, flag: str = "--name") -> str:
    """A model's short name (run ids ``NAME/METHOD-…``, file names): letters, digits and ``-._`` only, not ``.`` or
    ``..`` (so no ``/``, no newline, and no two names share a slug); one line otherwise."""
    if not name or name in (".", "..") or model_slug(name) != name:
        raise SnrtuneError(f"{flag} {name!r} is not a model name: expected letters, digits, '-', '.' and '_' only "
                           f"(a run id is NAME/METHOD-…, and the report names files after it), e.g. "
                           f"{model_slug(name).strip('.') or 'my-model'!r}")
    return name
