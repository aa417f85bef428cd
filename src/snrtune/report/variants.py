"""A run's identity as the report compares it (variant, selection kind, the control's SNR counterpart), its
training status (learned, did not learn, diverged) and its budget."""

from __future__ import annotations

import math

import numpy as np

from snrtune import criteria, method_registry, naming


def selection_kind(run: dict, metrics: dict | None = None) -> str | None:
    """The criterion of a run's selection (snrtune.criteria: ``snr``, ``random``, ``kappa``, …; None for a run
    without one): from the run identity's ``selection_kind``, the selection summary in metrics.json, the method
    registry's ``selection_kind``, or ``snr`` for a run with a t value (an older name, ``lowest``, reads as
    lowest-snr)."""
    kind = run.get("selection_kind") or ((metrics or {}).get("selection") or {}).get("selection")
    spec = method_registry.find(run["method"])
    if not kind and spec is not None:
        kind = spec.selection_kind
    if not kind and run.get("top_percent") is not None:
        kind = criteria.REFERENCE
    return criteria.canonical(kind) if kind else None


def variant_of(run: dict, kind: str | None = None) -> str:
    """The method as compared in the report: ``spectrum-t25``, ``spectrum-random-t25``, ``lora``, ``base``
    (naming.variant_label). A run whose selection's criterion ``kind`` is not its method's (``snrtune train
    --method spectrum`` on a kappa selection) is labelled as that criterion's control of the method."""
    spec = method_registry.find(run["method"])
    label = naming.variant_label({**run, "top_percent": None})
    if spec is not None and kind and kind != spec.selection_kind and criteria.find(kind):
        control = method_registry.control(spec.mirrors or spec.name, kind)
        label = control.label if control else f"{label}-{criteria.canonical(kind)}"
    t = run.get("top_percent")
    return f"{label}-t{naming.format_t(t)}" if t is not None else label


def snr_counterpart(variant: str) -> str | None:
    """``spectrum-random-t25`` → ``spectrum-t25``: the SNR selection a control mirrors (by the method registry's
    controls and their labels); None for a variant that is no control."""
    for spec in sorted((s for s in map(method_registry.get, method_registry.names()) if s.mirrors),
                       key=lambda s: len(s.label), reverse=True):
        rest = variant.removeprefix(spec.label)
        if rest != variant and (not rest or rest.startswith("-t")):
            return method_registry.get(spec.mirrors).label + rest
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
