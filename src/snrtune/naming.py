"""Names derived from values, in one place: the t value in file names and run ids, run names and their
inverse, the report's variant labels, and module names from parameter names.

Light (no torch): both ``snrtune.training.train`` and the workflow's ``snrtune.workflow.config`` import it.
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


def run_name(method: str, t: float | None, seed: int) -> str:
    """'spectrum-t25-s0' for methods with a selection, 'qlora-s0' otherwise (docs/artifacts.md)."""
    if method_registry.get(method).needs_selection:
        return f"{method}-t{format_t(t)}-s{seed}"
    return f"{method}-s{seed}"


def parse_run(run: str) -> dict[str, Any]:
    """Inverse of run_name: {'method', 'top_percent' (a string, or None), 'seed'}."""
    head, _, seed = run.rpartition("-s")
    if not head or not seed.isdigit():
        raise SnrtuneError(f"run name {run!r}: expected METHOD-tT-sSEED or METHOD-sSEED")
    for method in sorted(method_registry.selection_names(), key=len, reverse=True):  # the longest name first
        if head.startswith(method + "-t"):
            return {"method": method, "top_percent": head[len(method) + 2:], "seed": int(seed)}
    return {"method": head, "top_percent": None, "seed": int(seed)}


def variant_of(run: dict) -> str:
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
