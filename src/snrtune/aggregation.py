"""How a task's score is made from its per-example values (numpy only): evaluate checks that the values it keeps
reproduce lm-eval's score with it, and the report's statistics (snrtune.report.stats) build on it.

``values`` is shape ``(n,)`` for a metric that is the mean over examples (accuracy, exact match), or ``(n, 2)``
rows ``(loglikelihood, words or bytes)`` for a corpus-level ratio metric (``weighted_perplexity`` =
exp(-Σ ll / Σ words), ``bits_per_byte`` = -Σ ll / Σ bytes / ln 2).
"""

from __future__ import annotations

import math

import numpy as np

AGGREGATIONS = ("mean", "weighted_perplexity", "bits_per_byte")


def of_ratio(ratio, aggregation: str):
    """The ratio metric from R = Σ ll / Σ n."""
    return np.exp(-ratio) if aggregation == "weighted_perplexity" else -ratio / math.log(2)


def corpus_metric(values, aggregation: str = "mean", axis: int = -1) -> np.ndarray | float:
    """The task-level metric from per-example data along ``axis`` (the examples axis).

    ``mean``: the mean. ``weighted_perplexity``: exp(-Σ ll / Σ n). ``bits_per_byte``: -Σ ll / Σ n / ln 2.
    Ratio data has a trailing axis of 2, so ``axis`` counts without it.
    """
    arr = np.asarray(values, dtype=float)
    if aggregation == "mean":
        return arr.mean(axis=axis)
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation {aggregation!r} not supported")
    return of_ratio(arr[..., 0].sum(axis=axis) / arr[..., 1].sum(axis=axis), aggregation)
