"""Confidence intervals and paired tests over per-example scores (numpy only).

A run's per-example data is ``values``: shape ``(n,)`` for a metric that is the mean over examples (accuracy,
exact match), or ``(n, 2)`` rows ``(loglikelihood, words or bytes)`` for a corpus-level ratio metric
(``weighted_perplexity`` = exp(-Σ ll / Σ words), ``bits_per_byte`` = -Σ ll / Σ bytes / ln 2). Several seeds of
one variant are ``(k, n, …)``: the same n examples evaluated for each seed.

- Confidence intervals: percentile bootstrap (not BCa), 95 %, ``RESAMPLES`` resamples, a fixed RNG seed.
  One seed: resample examples. Several seeds: hierarchical, resample seeds, then examples within each drawn
  seed; the statistic is the mean over seeds of each seed's corpus-level metric.
- Paired comparison of two variants on the same examples (and the same seeds): the difference, its paired
  bootstrap CI (the same seed and example draws for both), a two-sided sign-flip permutation p-value (each
  seed × example pair is swapped between the two runs with probability 1/2) and a rough number of examples
  that would separate them (two-sided test at alpha 0.05 with power 0.8, at the observed difference and spread).
- Holm's step-down correction for several comparisons.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

RESAMPLES = 5000
CONFIDENCE = 0.95
RNG_SEED = 20240611
ALPHA = 0.05
POWER = 0.8
AGGREGATIONS = ("mean", "weighted_perplexity", "bits_per_byte")
_CHUNK_CELLS = 2_000_000  # resamples × examples per vectorised chunk: bounded memory on large tasks


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float
    n_examples: int
    n_seeds: int


@dataclass(frozen=True)
class Comparison:
    difference: float  # metric(a) - metric(b), mean over seeds
    low: float
    high: float
    p_value: float
    n_examples: int
    n_seeds: int
    examples_needed: float  # examples per seed for a two-sided test at ALPHA with POWER (inf: no difference)


# --- the corpus-level metric ------------------------------------------------------------------------------

def as_values(values, aggregation: str) -> np.ndarray:
    """Per-example data as a float array (k seeds, n examples[, 2]); a single seed gets k = 1."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation {aggregation!r} not supported: expected one of {', '.join(AGGREGATIONS)}")
    arr = np.asarray(values, dtype=float)
    pair = aggregation != "mean"
    if arr.ndim == (2 if pair else 1):
        arr = arr[None]
    if arr.ndim != (3 if pair else 2) or (pair and arr.shape[-1] != 2):
        raise ValueError(f"per-example values of shape {np.shape(values)} do not fit aggregation {aggregation!r}")
    if arr.shape[1] == 0:
        raise ValueError("no examples")
    return arr


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
    ll, n = arr[..., 0].sum(axis=axis), arr[..., 1].sum(axis=axis)
    ratio = ll / n
    return np.exp(-ratio) if aggregation == "weighted_perplexity" else -ratio / math.log(2)


def _seed_metrics(arr: np.ndarray, idx: np.ndarray, aggregation: str) -> np.ndarray:
    """Metric of ``arr`` (n[, 2]) for each row of example indices ``idx`` (r, n)."""
    return corpus_metric(arr[idx], aggregation, axis=1)


def _chunks(resamples: int, n: int):
    size = max(1, _CHUNK_CELLS // max(n, 1))
    for start in range(0, resamples, size):
        yield min(size, resamples - start)


def _percentile(stats: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(stats, [tail, 100 - tail])
    return float(low), float(high)


# --- one variant ------------------------------------------------------------------------------------------

def _hierarchical(k: int, n: int, statistic, resamples: int, seed: int) -> np.ndarray:
    """Replicates of the mean over seeds of ``statistic(seed, example_indices)``: each replicate draws k seeds
    with replacement (k > 1), then n examples with replacement within each drawn seed."""
    rng = np.random.default_rng(seed)
    out = []
    for r in _chunks(resamples, n * k):
        seeds = rng.integers(0, k, size=(r, k)) if k > 1 else np.zeros((r, 1), dtype=int)
        total = np.zeros(r)
        for j in range(k):
            idx = rng.integers(0, n, size=(r, n))
            per = np.empty(r)
            for s in np.unique(seeds[:, j]):  # draw j of each resample used seed s
                rows = seeds[:, j] == s
                per[rows] = statistic(s, idx[rows])
            total += per
        out.append(total / k)
    return np.concatenate(out)


def bootstrap_distribution(values, aggregation: str = "mean", resamples: int = RESAMPLES,
                           seed: int = RNG_SEED) -> np.ndarray:
    """``resamples`` bootstrap replicates of the mean-over-seeds metric (seeds, then examples, resampled)."""
    arr = as_values(values, aggregation)
    return _hierarchical(arr.shape[0], arr.shape[1], lambda s, idx: _seed_metrics(arr[s], idx, aggregation),
                         resamples, seed)


def bootstrap_ci(values, aggregation: str = "mean", confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                 seed: int = RNG_SEED) -> Interval:
    """Percentile bootstrap CI of the metric; several seeds → mean over seeds, hierarchical resampling."""
    arr = as_values(values, aggregation)
    estimate = float(np.mean(corpus_metric(arr, aggregation, axis=1)))
    low, high = _percentile(bootstrap_distribution(arr, aggregation, resamples, seed), confidence)
    return Interval(estimate, low, high, n_examples=arr.shape[1], n_seeds=arr.shape[0])


# --- two variants on the same examples --------------------------------------------------------------------

def _paired(a, b, aggregation: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = as_values(a, aggregation), as_values(b, aggregation)
    if a.shape != b.shape:
        raise ValueError(f"paired data must have the same seeds and examples: shapes {a.shape} and {b.shape}")
    return a, b


def _difference(a: np.ndarray, b: np.ndarray, aggregation: str) -> float:
    return float(np.mean(corpus_metric(a, aggregation, axis=1) - corpus_metric(b, aggregation, axis=1)))


def paired_bootstrap(a, b, aggregation: str = "mean", resamples: int = RESAMPLES,
                     seed: int = RNG_SEED) -> np.ndarray:
    """Bootstrap replicates of metric(a) - metric(b): the same seed and example draws for both runs."""
    a, b = _paired(a, b, aggregation)

    def difference(s, idx):
        return _seed_metrics(a[s], idx, aggregation) - _seed_metrics(b[s], idx, aggregation)

    return _hierarchical(a.shape[0], a.shape[1], difference, resamples, seed)


def sign_flip_pvalue(a, b, aggregation: str = "mean", resamples: int = RESAMPLES, seed: int = RNG_SEED) -> float:
    """Two-sided permutation p-value of metric(a) - metric(b) = 0: under the null the two runs' results on each
    seed × example are exchangeable, so each pair is swapped with probability 1/2. p = (1 + #{|T*| ≥ |T|}) / (R + 1).
    """
    a, b = _paired(a, b, aggregation)
    observed = abs(_difference(a, b, aggregation))
    k, n = a.shape[:2]
    rng = np.random.default_rng(seed)
    extreme = 0
    tol = 1e-12 * max(1.0, observed)
    for r in _chunks(resamples, n * k):
        total = np.zeros(r)
        for s in range(k):
            swap = rng.integers(0, 2, size=(r, n), dtype=np.int8).astype(bool)
            if aggregation != "mean":
                swap = swap[..., None]
            a_s = np.where(swap, b[s][None], a[s][None])
            b_s = np.where(swap, a[s][None], b[s][None])
            total += corpus_metric(a_s, aggregation, axis=1) - corpus_metric(b_s, aggregation, axis=1)
        extreme += int(np.sum(np.abs(total / k) >= observed - tol))
    return (1 + extreme) / (resamples + 1)


def examples_needed(difference: float, standard_error: float, n_examples: int, alpha: float = ALPHA,
                    power: float = POWER) -> float:
    """Examples (per seed) for a two-sided test at ``alpha`` to detect ``difference`` with ``power``, scaling the
    observed standard error as 1/sqrt(n): n · ((z_{1-alpha/2} + z_power) · se / |difference|)². inf for no difference.
    """
    if difference == 0 or not math.isfinite(difference):
        return math.inf
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    return n_examples * (z * standard_error / abs(difference)) ** 2


def compare(a, b, aggregation: str = "mean", confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
            seed: int = RNG_SEED) -> Comparison:
    """metric(a) - metric(b) on the same seeds and examples: paired bootstrap CI, sign-flip p-value, n needed."""
    a, b = _paired(a, b, aggregation)
    diff = _difference(a, b, aggregation)
    boot = paired_bootstrap(a, b, aggregation, resamples, seed)
    low, high = _percentile(boot, confidence)
    p = sign_flip_pvalue(a, b, aggregation, resamples, seed + 1)
    se = float(np.std(boot, ddof=1))
    return Comparison(diff, low, high, p, n_examples=a.shape[1], n_seeds=a.shape[0],
                      examples_needed=examples_needed(diff, se, a.shape[1]))


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control), in the input order."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def normal_interval(score: float, stderr: float, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """score ± z·stderr (z = 1.96 at 95 %): the fallback when no per-example data exists."""
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    return score - z * stderr, score + z * stderr
