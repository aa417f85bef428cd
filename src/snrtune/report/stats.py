"""Intervals and paired tests over per-example scores, with seeds × examples as a crossed design (numpy, scipy).

A run's per-example data is ``values``: shape ``(n,)`` for a metric that is the mean over examples (accuracy,
exact match), or ``(n, 2)`` rows ``(loglikelihood, words or bytes)`` for a corpus-level ratio metric
(``weighted_perplexity`` = exp(-Σ ll / Σ words), ``bits_per_byte`` = -Σ ll / Σ bytes / ln 2). Several seeds of
one variant are ``(k, n, …)``: the same n examples scored for each seed (the example index is shared).

The model (docs/evaluation.md, "How the report decides"): a score x[s, i] of seed s on example i is
μ + u_s + v_i + w_si with random seed, example and residual terms (a two-way crossed random-effects model).
The variance of the grand mean x̄ is σ_u²/k + σ_v²/n + σ_w²/(kn). With the mean squares of the k × n table

    MS_seed    = n · Σ_s (x̄_s − x̄)² / (k − 1)      E = n σ_u² + σ_w²
    MS_example = k · Σ_i (x̄_i − x̄)² / (n − 1)      E = k σ_v² + σ_w²

``V = (MS_seed + MS_example) / (k n)`` has expectation Var(x̄) + σ_w²/(kn) ≥ Var(x̄): a conservative estimate
that keeps seed-to-seed (checkpoint) spread and the shared examples in, whole examples varying together across
seeds. Its degrees of freedom are Satterthwaite's, ``V² (kn)² / (MS_seed²/(k − 1) + MS_example²/(n − 1))``.
One seed: ``V = s² / n`` (the paired t-test over examples, n − 1 degrees of freedom); seed spread is then not
measured. Ratio metrics are linearised first: per seed R_s = Σ ll / Σ w and per example the pseudo-value
R_s + (ll_i − R_s w_i) / w̄_s, whose mean is R_s (the delta method); the metric is a monotone function of R.

- A score's interval: for 0/1 scores the Wilson interval at the effective number of examples
  n_eff = p(1 − p) / V (k·n when V = 0; n for one seed) with the t quantile at the degrees of freedom, so it
  stays inside [0, 1] and is not empty at 0 or 1; otherwise x̄ ± t·√V (for a ratio metric on R, then mapped).
- A paired comparison of two variants on the same seeds and examples: the model on d = a − b, the difference
  ± t·√V, the two-sided t-test p-value, the power at the observed difference and the examples per seed a test
  at a given level would need for power 0.8 (only the example terms shrink with n: when the seed term alone
  is too large, more examples do not help and it is inf).
- Holm's step-down correction for a family of comparisons.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as _st

from snrtune.aggregation import AGGREGATIONS, corpus_metric, of_ratio as _of_ratio

CONFIDENCE = 0.95
ALPHA = 0.05
POWER = 0.8


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float
    n_examples: int
    n_seeds: int
    method: str  # "wilson", "t" or "t (delta method)"


@dataclass(frozen=True)
class Spread:
    """The crossed-design summary of a k × n table of (pseudo-)values."""
    mean: float
    variance: float  # V, the variance estimate of the mean
    df: float  # Satterthwaite degrees of freedom of V
    seed_variance: float  # σ_u², max(0, (MS_seed − residual MS) / n); 0 with one seed (not measured)
    n_examples: int
    n_seeds: int


@dataclass(frozen=True)
class Comparison:
    difference: float  # metric(a) − metric(b), mean over seeds
    low: float
    high: float
    p_value: float
    n_examples: int
    n_seeds: int
    se: float
    df: float
    seed_variance: float

    def power(self, alpha: float = ALPHA) -> float:
        """Power of the two-sided t-test at ``alpha`` if the true difference were the observed one."""
        return power(self.difference, self.se, self.df, alpha)

    def examples_needed(self, alpha: float = ALPHA, target_power: float = POWER) -> float:
        return examples_needed(self.difference, self.se, self.n_examples, self.n_seeds, self.seed_variance,
                               alpha, target_power)


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
    if not np.isfinite(arr).all():
        raise ValueError("per-example values must be finite")
    return arr


def pseudo_values(values, aggregation: str = "mean", scale: str = "metric") -> np.ndarray:
    """(k, n) values whose mean over examples is each seed's score: the scores themselves for ``mean``; for a
    ratio metric the delta-method pseudo-values of R = Σ ll / Σ w (``scale="ratio"``) or of the metric f(R)
    (``scale="metric"``: f(R_s) + f'(R_s) · (pseudo-value of R − R_s))."""
    arr = as_values(values, aggregation)
    if aggregation == "mean":
        return arr
    ll, w = arr[..., 0], arr[..., 1]
    ratio = ll.sum(axis=1, keepdims=True) / w.sum(axis=1, keepdims=True)
    psi = ratio + (ll - ratio * w) / w.mean(axis=1, keepdims=True)
    if scale == "ratio":
        return psi
    slope = -np.exp(-ratio) if aggregation == "weighted_perplexity" else np.full_like(ratio, -1 / math.log(2))
    return _of_ratio(ratio, aggregation) + slope * (psi - ratio)


def spread(x) -> Spread:
    """Mean, V and Satterthwaite degrees of freedom of a (k, n) table (module docstring)."""
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[None]
    k, n = x.shape
    mean = float(x.mean())
    if n < 2:
        return Spread(mean, math.nan, math.nan, 0.0, n, k)
    if k == 1:
        var = float(x[0].var(ddof=1)) / n
        return Spread(mean, var, float(n - 1), 0.0, n, 1)
    seed_means, example_means = x.mean(axis=1), x.mean(axis=0)
    ms_seed = n * float(((seed_means - mean) ** 2).sum()) / (k - 1)
    ms_example = k * float(((example_means - mean) ** 2).sum()) / (n - 1)
    residual = x - seed_means[:, None] - example_means[None, :] + mean
    ms_residual = float((residual ** 2).sum()) / ((k - 1) * (n - 1))
    var = (ms_seed + ms_example) / (k * n)
    denominator = ms_seed ** 2 / (k - 1) + ms_example ** 2 / (n - 1)
    df = (ms_seed + ms_example) ** 2 / denominator if denominator > 0 else float(k * n - 1)
    return Spread(mean, var, df, max(0.0, (ms_seed - ms_residual) / n), n, k)


def _t(df: float, confidence: float = CONFIDENCE) -> float:
    return float(_st.t.ppf(0.5 + confidence / 2, df)) if math.isfinite(df) else float(_st.norm.ppf(0.5 + confidence / 2))


def wilson(p: float, n: float, z: float) -> tuple[float, float]:
    """Wilson score interval of a proportion p observed on n trials at quantile z."""
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(max(0.0, p * (1 - p) / n + z * z / (4 * n * n)))
    return max(0.0, centre - half), min(1.0, centre + half)


def interval(values, aggregation: str = "mean", confidence: float = CONFIDENCE) -> Interval:
    """The 95 % interval of a variant's score over its seeds and examples (module docstring)."""
    arr = as_values(values, aggregation)
    k, n = arr.shape[:2]
    estimate = float(np.mean(corpus_metric(arr, aggregation, axis=1)))
    if aggregation == "mean" and np.isin(arr, (0.0, 1.0)).all():
        s = spread(arr)
        if k == 1:
            n_eff, z = float(n), _t(math.inf, confidence)
        else:
            n_eff = k * n if s.variance <= 0 else min(k * n, estimate * (1 - estimate) / s.variance)
            z = _t(s.df, confidence) if s.variance > 0 else _t(math.inf, confidence)
        low, high = wilson(estimate, n_eff, z)
        return Interval(estimate, low, high, n, k, "wilson")
    s = spread(pseudo_values(arr, aggregation, scale="ratio" if aggregation != "mean" else "metric"))
    half = _t(s.df, confidence) * math.sqrt(s.variance) if s.variance > 0 else 0.0
    if aggregation == "mean":
        return Interval(estimate, s.mean - half, s.mean + half, n, k, "t")
    ends = sorted(float(_of_ratio(r, aggregation)) for r in (s.mean - half, s.mean + half))
    return Interval(estimate, ends[0], ends[1], n, k, "t (delta method)")


# --- two variants on the same examples --------------------------------------------------------------------

def compare(a, b, aggregation: str = "mean", confidence: float = CONFIDENCE) -> Comparison:
    """metric(a) − metric(b) on the same seeds and examples: the crossed model on the paired differences."""
    a, b = as_values(a, aggregation), as_values(b, aggregation)
    if a.shape != b.shape:
        raise ValueError(f"paired data must have the same seeds and examples: shapes {a.shape} and {b.shape}")
    difference = float(np.mean(corpus_metric(a, aggregation, axis=1) - corpus_metric(b, aggregation, axis=1)))
    s = spread(pseudo_values(a, aggregation) - pseudo_values(b, aggregation))
    se = math.sqrt(s.variance) if s.variance > 0 else 0.0
    if se > 0:
        p = float(2 * _st.t.sf(abs(difference) / se, s.df))
    else:
        p = 1.0 if difference == 0 else 0.0
    half = _t(s.df, confidence) * se
    return Comparison(difference, difference - half, difference + half, p, s.n_examples, s.n_seeds, se, s.df,
                      s.seed_variance)


def power(difference: float, se: float, df: float, alpha: float = ALPHA) -> float:
    """P(two-sided t-test at ``alpha`` rejects) when the true difference is ``difference`` (shifted t)."""
    if se <= 0 or not math.isfinite(se):
        return 1.0 if difference != 0 else alpha
    crit = float(_st.t.ppf(1 - alpha / 2, df))
    shift = abs(difference) / se
    return float(_st.t.sf(crit - shift, df) + _st.t.cdf(-crit - shift, df))


def examples_needed(difference: float, se: float, n_examples: int, n_seeds: int = 1, seed_variance: float = 0.0,
                    alpha: float = ALPHA, target_power: float = POWER) -> float:
    """Examples per seed for a two-sided test at ``alpha`` to detect ``difference`` with ``target_power``:
    V(n') = σ_u²/k + (V − σ_u²/k) · n / n' must reach (δ / (z_{1−α/2} + z_power))², so
    n' = n (V − σ_u²/k) / ((δ / z)² − σ_u²/k); inf when the seed term alone is too large or δ = 0."""
    if difference == 0 or not math.isfinite(difference):
        return math.inf
    z = float(_st.norm.ppf(1 - alpha / 2) + _st.norm.ppf(target_power))
    seed_part = seed_variance / n_seeds
    room = (difference / z) ** 2 - seed_part
    if room <= 0:
        return math.inf
    return n_examples * max(0.0, se * se - seed_part) / room


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
    z = _t(math.inf, confidence)
    return score - z * stderr, score + z * stderr
