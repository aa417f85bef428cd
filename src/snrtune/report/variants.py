"""A run's identity as the report compares it (variant, selection kind, the control's SNR counterpart), its
training status (learned, did not learn, diverged) and its budget."""

from __future__ import annotations

import math

import numpy as np

from snrtune import method_registry, naming


CONTROLS = ("random", "lowest")  # selection controls: as many modules per type as the SNR selection


def selection_kind(run: dict, metrics: dict | None = None) -> str | None:
    """``snr``, ``random`` or ``lowest`` for a run that trains a selection (None otherwise): from the run
    identity's ``selection_kind``, the selection summary in metrics.json, the method registry's
    ``selection_kind``, or a method named like ``spectrum-random``."""
    kind = run.get("selection_kind") or ((metrics or {}).get("selection") or {}).get("selection")
    spec = method_registry.find(run["method"])
    if not kind and spec is not None and spec.selection_kind in CONTROLS:
        kind = spec.selection_kind
    if not kind:
        kind = next((c for c in CONTROLS if run["method"].endswith("-" + c)), None)
    if not kind and run.get("top_percent") is not None:
        kind = "snr"
    return kind


def variant_of(run: dict, kind: str | None = None) -> str:
    """The method as compared in the report: ``spectrum-t25``, ``spectrum-random-t25``, ``lora``, ``base``
    (naming.variant_label, with a control's kind after the method label when its method name does not say it)."""
    label = naming.variant_label({**run, "top_percent": None})
    if kind in CONTROLS and not label.endswith("-" + kind):
        label = f"{label}-{kind}"
    t = run.get("top_percent")
    return f"{label}-t{naming.format_t(t)}" if t is not None else label


def snr_counterpart(variant: str) -> str | None:
    """``spectrum-random-t25`` → ``spectrum-t25``: the SNR selection a control mirrors."""
    for kind in CONTROLS:
        if f"-{kind}-t" in variant or variant.endswith(f"-{kind}"):
            return variant.replace(f"-{kind}", "", 1)
    return None


LEARN_MARGIN = 2.5  # the drop must exceed this many standard errors of a difference of two medians


def _losses(metrics: dict, key: str) -> list:
    return [loss for _, loss in metrics.get(key) or []]


def _robust_drop(values: list[float]) -> bool | None:
    """First vs last quarter (q = max(1, n // 4) values each) of a loss curve: True when the median of the
    last quarter is below the median of the first by more than LEARN_MARGIN × 1.2533 σ √(2/q), the standard
    error of a difference of two medians of q values, with the step-to-step noise σ = 1.4826 × median |Δloss| / √2
    (robust to the trend and to spikes). A flat noisy curve does not pass, a late spike does not move a median;
    None with fewer than 4 values."""
    if len(values) < 4:
        return None
    q = max(1, len(values) // 4)
    arr = np.asarray(values)
    noise = 1.4826 * float(np.median(np.abs(np.diff(arr)))) / math.sqrt(2)
    drop = float(np.median(arr[:q]) - np.median(arr[-q:]))
    return drop > LEARN_MARGIN * 1.2533 * noise * math.sqrt(2 / q)


def run_status(metrics: dict) -> str | None:
    """``diverged`` (metrics.json ``"status": "diverged"`` or a non-finite — null — training or evaluation
    loss), ``did not learn``, ``learned``, or None (too few losses to tell). Learning is judged on the training
    loss (the objective the run optimises); when fewer than 4 training losses were logged, on the eval loss."""
    train, evals = _losses(metrics, "train_loss"), _losses(metrics, "eval_loss")
    if metrics.get("status") == "diverged" or any(v is None or not math.isfinite(v) for v in train + evals):
        return "diverged"
    drop = _robust_drop([float(v) for v in train])
    if drop is None:
        drop = _robust_drop([float(v) for v in evals])
    return None if drop is None else "learned" if drop else "did not learn"


def budget_of(metrics: dict) -> tuple[float | None, float | None]:
    """(examples per optimizer step, max steps) from metrics.json ``budget``; (None, None) when absent."""
    budget = metrics.get("budget") or {}
    return budget.get("examples_per_step"), budget.get("max_steps")
