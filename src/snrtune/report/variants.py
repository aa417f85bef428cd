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


LEARN_MARGIN = 2.5  # the drop must exceed this many standard errors


def _losses(metrics: dict, key: str) -> list:
    return [loss for _, loss in metrics.get(key) or []]


def _robust_drop(values: list[float]) -> bool | None:
    """The first logged loss (the Trainer computes it before the first update: the starting model's loss on its
    first batch) against the median of the last quarter (q = max(1, n // 4) values): True when the drop exceeds
    LEARN_MARGIN standard errors of a difference of one value and a median of q, σ √(1 + π / (2q)), with the
    step-to-step noise σ = 1.4826 × median |Δloss| / √2 (robust to the trend and to spikes). A fast learner —
    at its floor after two steps — passes; a flat noisy curve passes only by a 2.5-standard-error accident; a late
    spike does not move a median. None with fewer than 4 values."""
    if len(values) < 4:
        return None
    q = max(1, len(values) // 4)
    arr = np.asarray(values)
    noise = 1.4826 * float(np.median(np.abs(np.diff(arr)))) / math.sqrt(2)
    drop = float(arr[0] - np.median(arr[-q:]))
    return drop > LEARN_MARGIN * noise * math.sqrt(1 + math.pi / (2 * q))


def run_status(metrics: dict) -> str | None:
    """``diverged`` (metrics.json ``"status": "diverged"`` or a non-finite — null — training or evaluation
    loss), ``did not learn``, ``learned``, or None (too few losses to tell). Learning is judged on the training
    loss (the objective the run optimises); when fewer than 4 training losses were logged, on the eval loss. The
    report overturns "did not learn" when the run's target score is significantly above the base model's
    (snrtune.report.comparisons)."""
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
