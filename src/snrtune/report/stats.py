"""Intervals and paired tests over per-example scores, seeds × examples crossed (numpy, scipy; no resampling).

A run's per-example data is ``values``: shape ``(n,)`` for a metric that is the mean over examples (accuracy,
exact match), or ``(n, 2)`` rows ``(loglikelihood, words or bytes)`` for a corpus-level ratio metric
(``weighted_perplexity`` = exp(-Σ ll / Σ words), ``bits_per_byte`` = -Σ ll / Σ bytes / ln 2). Several seeds of
one variant are ``(k, n, …)``: the same n examples scored by each seed's checkpoint.

The model (docs/evaluation.md, "How the report decides"): the score of seed s of method m on example i is
x[m, s, i] = μ_m + u_ms + v_mi + w_msi — a checkpoint effect u (variance σ_u², the seed-to-seed spread), an example
effect v (shared by the seeds of a method), and a seed × example residual w (variance σ_w²). For one method's
k × n table, the variance of its seed means S² has expectation σ_u² + σ_w²/n and the residual mean square
MS_res expectation σ_w², so S² − MS_res/n estimates σ_u² without bias. **The checkpoint variance is pooled over
the variants of one model on one task** (``checkpoint_variance``): σ̂_u² = Σ (k_m − 1)(S²_m − MS_res,m/n) /
Σ (k_m − 1), with Σ (k_m − 1) degrees of freedom — kept as it comes out, negative included (truncating it at 0
makes the tests liberal exactly when the spread is underestimated).

The variance of a difference of two variants' means (seeds of different methods are different checkpoints, so
they are never paired; examples are) is

    V ≈ (1/k_a + 1/k_b) σ̂_u²  +  Var_i(D_i) / n,       D_i = x̄_a·i − x̄_b·i (the example means over seeds)

(a fixed model such as the base model has no checkpoint term); exactly, V = A + B below. Its degrees of freedom are Satterthwaite's over
the two parts whose sampling errors differ: A = Σ (σ̂_u² + MS_res/n)/k, the variance of the seed means, a mean
square with the pooled degrees of freedom, and B = max(0, Var_i(D_i)/n − Σ MS_res/(nk)), the method × example
interaction (never negative: a negative value is noise), whose sampling error is that of the example mean square
E = Var_i(D_i)/n, and A at its one-sided 90 % upper confidence bound A⁺ = A · df_pooled / χ²_{df_pooled, 0.10}
(a checkpoint part that came out small by chance must not also buy degrees of freedom):
df = (A⁺ + B)² / (A⁺²/df_pooled + E²/(n − 1)). So V ≥ A, and df ≈ df_pooled unless the interaction dominates. Without a measured
checkpoint variance (one seed everywhere, or a claim about checkpoints) V = Var_i(D_i)/n with n − 1 degrees of
freedom: the paired t-test over examples. Ratio metrics are linearised first (delta method): per seed
R_s = Σ ll / Σ w, per example the pseudo-value R_s + (ll_i − R_s w_i) / w̄_s, whose mean is R_s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special as _sp

from snrtune.aggregation import AGGREGATIONS, corpus_metric, of_ratio as _of_ratio

CONFIDENCE = 0.95
ALPHA = 0.05
DF_BOUND = 0.10  # the degrees of freedom take the checkpoint part at its one-sided 1 − DF_BOUND upper bound
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
class CheckpointVariance:
    """σ̂_u², the seed-to-seed (checkpoint) variance pooled over the variants of one model on one task, on one
    scale, with its degrees of freedom Σ (k_m − 1); ``residual``: the pooled MS_res / n (for variants measured
    with one seed). ``df == 0``: not measured (no variant has two distinct seeds)."""
    value: float
    df: int
    residual: float = 0.0

    @property
    def measured(self) -> bool:
        return self.df > 0


NOT_MEASURED = CheckpointVariance(0.0, 0, 0.0)


@dataclass(frozen=True)
class Comparison:
    difference: float  # metric(a) − metric(b), each the mean over its seeds
    low: float
    high: float
    p_value: float  # two-sided
    n_examples: int
    n_seeds: tuple[int, int]  # distinct seeds of a and of b
    se: float
    df: float
    seed_part: float  # the part of se² that more examples cannot shrink (the checkpoint term)
    confidence: float

    def power(self, alpha: float = ALPHA) -> float:
        """Power of the two-sided t-test at ``alpha`` if the true difference were the observed one."""
        return power(self.difference, self.se, self.df, alpha)

    def examples_needed(self, alpha: float = ALPHA, target_power: float = POWER,
                        difference: float | None = None) -> float:
        """Examples per seed for power ``target_power`` of a two-sided test at ``alpha`` to detect ``difference``
        (default: the observed one)."""
        return examples_needed(self.difference if difference is None else difference, self.se, self.n_examples,
                               self.seed_part, alpha, target_power)

    def upper(self, confidence: float) -> float:
        """One-sided upper confidence bound of the difference."""
        return self.difference + one_sided_quantile(self.df, confidence) * self.se

    def lower(self, confidence: float) -> float:
        return self.difference - one_sided_quantile(self.df, confidence) * self.se


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


def distinct_seeds(values) -> tuple[np.ndarray, int]:
    """The seeds (rows of a (k, n[, 2]) array) with per-example rows of their own: a row identical to an earlier
    one — one checkpoint evaluated twice, or copied — counts once. Returns (rows kept, rows dropped)."""
    arr = np.asarray(values, dtype=float)
    keep: list[int] = []
    for s in range(arr.shape[0]):
        if not any(np.array_equal(arr[s], arr[t]) for t in keep):
            keep.append(s)
    return arr[keep], arr.shape[0] - len(keep)


# --- the variance components -------------------------------------------------------------------------------

def _seed_parts(x: np.ndarray) -> tuple[float, float]:
    """(S², MS_res / n) of a k × n table, k ≥ 2, n ≥ 2: the variance of the seed means and the residual term."""
    k, n = x.shape
    seed_means, example_means, grand = x.mean(axis=1), x.mean(axis=0), x.mean()
    residual = x - seed_means[:, None] - example_means[None, :] + grand
    ms_residual = float((residual ** 2).sum()) / ((k - 1) * (n - 1))
    return float(seed_means.var(ddof=1)), ms_residual / n


def checkpoint_variance(tables, aggregation: str = "mean", scale: str = "metric") -> CheckpointVariance:
    """σ̂_u² pooled over ``tables`` (each a variant's (k, n[, 2]) per-example values on one task, or a prepared
    ``Table`` on the wanted scale; variants with fewer than two distinct seeds or examples add nothing):
    Σ (k − 1)(S² − MS_res/n) / Σ (k − 1), not truncated."""
    total, df, residual = 0.0, 0, 0.0
    for values in tables:
        x = values.pseudo if isinstance(values, Table) else prepare(values, aggregation, scale).pseudo
        k, n = x.shape
        if k < 2 or n < 2:
            continue
        s2, r = _seed_parts(x)
        total += (k - 1) * (s2 - r)
        residual += (k - 1) * r
        df += k - 1
    if not df:
        return NOT_MEASURED
    return CheckpointVariance(total / df, df, residual / df)


@dataclass(frozen=True)
class Table:
    """A variant's per-example data prepared once: its distinct seeds, their pseudo-values on one scale, the
    example means over seeds, the residual term MS_res/n (NaN with one seed) and the score."""
    values: np.ndarray
    pseudo: np.ndarray
    example_means: np.ndarray
    residual: float
    score: float
    dropped: int

    @property
    def k(self) -> int:
        return self.pseudo.shape[0]

    @property
    def n(self) -> int:
        return self.pseudo.shape[1]


def prepare(values, aggregation: str = "mean", scale: str = "metric") -> Table:
    arr, dropped = distinct_seeds(as_values(values, aggregation))
    x = pseudo_values(arr, aggregation, scale)
    residual = _seed_parts(x)[1] if x.shape[0] >= 2 and x.shape[1] >= 2 else math.nan
    return Table(arr, x, x.mean(axis=0), residual, float(np.mean(corpus_metric(arr, aggregation, axis=1))), dropped)


def _variance(example_values: np.ndarray, sides: list[Table],
              cv: CheckpointVariance | None) -> tuple[float, float, float]:
    """(V, degrees of freedom, seed part) of the mean of ``example_values`` (per-example means over seeds, or
    their differences), ``sides``: the seed tables whose checkpoints vary (module docstring)."""
    n = len(example_values)
    e = float(np.var(example_values, ddof=1)) / n if n > 1 else math.nan
    if cv is None or not cv.measured or not sides:
        return e, float(n - 1), 0.0
    residuals = [t.residual if not math.isnan(t.residual) else cv.residual for t in sides]
    a = max(0.0, sum((cv.value + r) / t.k for t, r in zip(sides, residuals)))
    b = max(0.0, e - sum(r / t.k for t, r in zip(sides, residuals)))  # σ_vd²/n ≥ 0: a negative value is noise
    v = a + b
    if v <= 0:
        return 0.0, float(n - 1), 0.0
    # Satterthwaite: A is a mean square with the pooled degrees of freedom; B's sampling error is that of the
    # example mean square E (n − 1 degrees of freedom), whatever B's size. A enters at its one-sided upper
    # confidence bound: a checkpoint variance that came out small by chance must not also buy degrees of freedom
    # (with 2–4 of them the plain formula named false winners 6.5 % of the time, benchmarks/verdict_calibration.py)
    a_up = a * cv.df / _chi2_quantile(cv.df, DF_BOUND)
    v_up = a_up + b
    denominator = a_up * a_up / cv.df + e * e / (n - 1)
    df = v_up * v_up / denominator if denominator > 0 else float(n - 1)
    seed_part = max(0.0, cv.value) * sum(1 / t.k for t in sides)
    return v, df, min(seed_part, v)


def _t(df: float, confidence: float = CONFIDENCE) -> float:
    """The two-sided quantile at ``confidence``."""
    return _quantile(df, 0.5 + confidence / 2)


def _quantile(df: float, q: float) -> float:
    """The q-quantile of Student's t with ``df`` degrees of freedom (the normal's when df is infinite)."""
    return float(_sp.stdtrit(df, q)) if math.isfinite(df) else float(_sp.ndtri(q))


def _chi2_quantile(df: float, q: float) -> float:
    """The q-quantile of the chi-square distribution with ``df`` degrees of freedom."""
    return float(_sp.chdtri(df, 1 - q))


def _sf(x: float, df: float) -> float:
    """P(T > x) for Student's t with ``df`` degrees of freedom."""
    return float(_sp.stdtr(df, -x)) if math.isfinite(df) else float(_sp.ndtr(-x))


def one_sided_quantile(df: float, confidence: float) -> float:
    return _quantile(df, confidence)


def one_sided_p(distance: float, se: float, df: float) -> float:
    """P(T ≥ distance / se) under the null: the one-sided p-value of a difference ``distance`` beyond the null's
    edge (0 when se = 0 and the distance is positive)."""
    if se <= 0:
        return 0.0 if distance > 0 else 1.0
    return _sf(distance / se, df)


def wilson(p: float, n: float, z: float) -> tuple[float, float]:
    """Wilson score interval of a proportion p observed on n trials at quantile z."""
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(max(0.0, p * (1 - p) / n + z * z / (4 * n * n)))
    return max(0.0, centre - half), min(1.0, centre + half)


def interval(values, aggregation: str = "mean", confidence: float = CONFIDENCE,
             cv: CheckpointVariance | None = None) -> Interval:
    """The interval of a variant's score over its seeds and examples: with ``cv`` (the model's pooled checkpoint
    variance on this task, on the ratio scale for a ratio metric) a claim about the method, without it about these
    checkpoints. ``values`` may be a prepared ``Table`` (on the ratio scale for a ratio metric). 0/1 scores: the Wilson interval at the effective number of examples p(1 − p)/V with the t quantile
    (inside [0, 1], not empty at 0 or 1); other means x̄ ± t·√V; ratio metrics on R = Σ ll / Σ w, mapped through
    the metric."""
    table = values if isinstance(values, Table) else prepare(values, aggregation,
                                                             "ratio" if aggregation != "mean" else "metric")
    k, n = table.k, table.n
    v, df, _ = _variance(table.example_means, [table], cv)
    estimate = table.score
    if aggregation == "mean" and np.isin(table.values, (0.0, 1.0)).all():
        if k == 1 and (cv is None or not cv.measured):  # one checkpoint: the classic Wilson interval on n trials
            low, high = wilson(estimate, n, _t(math.inf, confidence))
            return Interval(estimate, low, high, n, k, "wilson")
        n_eff = k * n if v <= 0 else min(k * n, estimate * (1 - estimate) / v)
        low, high = wilson(estimate, max(n_eff, 1.0), _t(df, confidence) if v > 0 else _t(math.inf, confidence))
        return Interval(estimate, low, high, n, k, "wilson")
    half = _t(df, confidence) * math.sqrt(v) if v > 0 else 0.0
    mean = float(table.pseudo.mean())
    if aggregation == "mean":
        return Interval(estimate, mean - half, mean + half, n, k, "t")
    ends = sorted(float(_of_ratio(r, aggregation)) for r in (mean - half, mean + half))
    return Interval(estimate, ends[0], ends[1], n, k, "t (delta method)")


def compare(a, b, aggregation: str = "mean", confidence: float = CONFIDENCE, cv: CheckpointVariance | None = None,
            b_fixed: bool = False) -> Comparison:
    """metric(a) − metric(b) on the same examples (rows: seeds; the seeds of a and b are different checkpoints and
    are not paired). With ``cv`` the checkpoints of each side vary (a claim about the methods); ``b_fixed``: b is one
    fixed model (the base model), without a checkpoint term. Without ``cv``: a claim about these checkpoints."""
    return compare_tables(prepare(a, aggregation), prepare(b, aggregation), confidence, cv, b_fixed)


def compare_tables(a: Table, b: Table, confidence: float = CONFIDENCE, cv: CheckpointVariance | None = None,
                   b_fixed: bool = False) -> Comparison:
    """``compare`` on prepared tables (``prepare``, metric scale)."""
    if a.n != b.n:
        raise ValueError(f"paired data must have the same examples: {a.n} and {b.n}")
    difference = a.score - b.score
    v, df, seed_part = _variance(a.example_means - b.example_means, [a] if b_fixed else [a, b], cv)
    se = math.sqrt(v) if v > 0 else 0.0
    if se > 0:
        p = 2 * _sf(abs(difference) / se, df)
    else:
        p = 1.0 if difference == 0 else 0.0
    half = _t(df, confidence) * se
    return Comparison(difference, difference - half, difference + half, p, a.n, (a.k, b.k), se, df, seed_part,
                      confidence)


def power(difference: float, se: float, df: float, alpha: float = ALPHA) -> float:
    """P(two-sided t-test at ``alpha`` rejects) when the true difference is ``difference`` (shifted t)."""
    if se <= 0 or not math.isfinite(se):
        return 1.0 if difference != 0 else alpha
    crit = _quantile(df, 1 - alpha / 2)
    shift = abs(difference) / se
    return _sf(crit - shift, df) + 1 - _sf(-crit - shift, df)


def examples_needed(difference: float, se: float, n_examples: int, seed_part: float = 0.0,
                    alpha: float = ALPHA, target_power: float = POWER) -> float:
    """Examples per seed for a two-sided test at ``alpha`` to detect ``difference`` with ``target_power``: the
    example part of se² shrinks as n/n', the seed part does not, so V(n') = seed + (se² − seed)·n/n' must reach
    (δ / (z_{1−α/2} + z_power))²; inf when the seed part alone is too large or δ = 0."""
    if difference == 0 or not math.isfinite(difference):
        return math.inf
    z = float(_sp.ndtri(1 - alpha / 2) + _sp.ndtri(target_power))
    room = (difference / z) ** 2 - seed_part
    if room <= 0:
        return math.inf
    return n_examples * max(0.0, se * se - seed_part) / room


def bonferroni(p_values) -> np.ndarray:
    """Bonferroni-adjusted p-values (m·p, at most 1): significant when below α, exactly when the interval at
    1 − α/m excludes 0, so the words and the printed intervals agree."""
    p = np.asarray(p_values, dtype=float)
    return np.minimum(1.0, p * len(p))


def t_interval_over_seeds(scores, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Mean ± t_{k−1} · standard error over k seeds' task scores: the fallback without per-example scores (it
    omits the example variance: every seed was scored on the same examples)."""
    x = np.asarray(scores, dtype=float)
    half = _t(len(x) - 1, confidence) * float(x.std(ddof=1)) / math.sqrt(len(x))
    return float(x.mean()) - half, float(x.mean()) + half


def normal_interval(score: float, stderr: float, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """score ± z·stderr (z = 1.96 at 95 %): one seed without per-example data, from lm-eval's stderr (example
    variance only)."""
    z = _t(math.inf, confidence)
    return score - z * stderr, score + z * stderr
