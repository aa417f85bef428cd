"""snrtune.report.stats against hand computations, exact coverage and fixed-seed simulations (vectorised: fast).
The decision rules built on it are checked cell by cell in test_calibration.py."""

import math

import numpy as np
import pytest
from scipy.stats import binom, t as student

from snrtune.report import stats


def _bernoulli(p, n, seed):
    return (np.random.default_rng(seed).random(n) < p).astype(float)


def test_wilson_interval_hand_computation_and_edges():
    # 12 of 40: centre (0.3 + 1.96²/80)/(1 + 1.96²/40), half 1.96/(1+1.96²/40)·sqrt(0.3·0.7/40 + 1.96²/6400)
    z = 1.959964
    ci = stats.interval([1.0] * 12 + [0.0] * 28)
    d = 1 + z * z / 40
    centre, half = (0.3 + z * z / 80) / d, z / d * math.sqrt(0.21 / 40 + z * z / 6400)
    assert ci.method == "wilson" and (ci.low, ci.high) == pytest.approx((centre - half, centre + half), abs=1e-6)
    zero, one = stats.interval([0.0] * 40), stats.interval([1.0] * 40)
    assert zero.low == 0.0 and zero.high == pytest.approx(z * z / (40 + z * z), rel=1e-5)  # not [0, 0]
    assert one.high == 1.0 and one.low == pytest.approx(1 - z * z / (40 + z * z), rel=1e-5)


def test_wilson_coverage_at_p_095_n_40_is_nominal():
    """Exact coverage (binomial sum over every outcome), where the percentile bootstrap gave 0.88."""
    n, p = 40, 0.95
    coverage = sum(binom.pmf(x, n, p) for x in range(n + 1)
                   if (lambda c: c.low <= p <= c.high)(stats.interval([1.0] * x + [0.0] * (n - x))))
    assert 0.93 <= coverage <= 0.97


def test_corpus_perplexity_is_recomputed_from_loglik_and_word_counts():
    docs = [[-10.0, 4], [-20.0, 6], [-5.0, 2]]  # (loglikelihood, words)
    assert stats.corpus_metric(docs, "weighted_perplexity", axis=0) == pytest.approx(math.exp(35 / 12))
    assert stats.corpus_metric(docs, "bits_per_byte", axis=0) == pytest.approx(35 / 12 / math.log(2))
    # the delta-method pseudo-values of R average to R, so the interval is built around the corpus metric
    psi = stats.pseudo_values(docs, "weighted_perplexity", scale="ratio")
    assert psi.mean() == pytest.approx(-35 / 12)
    ci = stats.interval(docs, "weighted_perplexity")
    assert ci.estimate == pytest.approx(math.exp(35 / 12)) and ci.low < ci.estimate < ci.high


A = np.array([[1.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0]])  # method a: 2 seeds × 4 examples
B = np.array([[0.0, 0.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]])  # method b


def _by_hand(x):
    """(S², MS_res / n) of a k × n table, from the definitions."""
    k, n = x.shape
    s2 = np.var(x.mean(axis=1), ddof=1)
    res = sum((x[s, i] - x[s].mean() - x[:, i].mean() + x.mean()) ** 2 for s in range(k) for i in range(n))
    return s2, res / ((k - 1) * (n - 1)) / n


def test_pooled_checkpoint_variance_hand_computation():
    """σ̂_u² = Σ (k − 1)(S² − MS_res/n) / Σ (k − 1), kept negative when it comes out negative."""
    (sa, ra), (sb, rb) = _by_hand(A), _by_hand(B)
    cv = stats.checkpoint_variance([A, B])
    assert cv.df == 2 and cv.value == pytest.approx(((sa - ra) + (sb - rb)) / 2)
    assert cv.residual == pytest.approx((ra + rb) / 2)
    flat = stats.checkpoint_variance([np.array([[1.0, 0, 1, 0], [0, 1, 0, 1]])])  # S² = 0, MS_res > 0
    assert flat.value < 0  # not truncated: truncation makes the tests liberal when the spread is underestimated
    assert not stats.checkpoint_variance([A[:1], B[:1]]).measured


def test_a_difference_of_methods_hand_computation():
    """V = A + B with A = Σ (σ̂_u² + r)/k (a mean square with the pooled df) and B = max(0, Var_i(D_i)/n − Σ r/k);
    Satterthwaite df with A at its one-sided 90 % upper bound A⁺ = A·df/χ²_{df,0.1}: (A⁺ + B)² / (A⁺²/df_pooled +
    E²/(n − 1)), E = Var_i(D_i)/n; the t-test and interval at those df."""
    (sa, ra), (sb, rb) = _by_hand(A), _by_hand(B)
    su2, df_u = ((sa - ra) + (sb - rb)) / 2, 2
    d_i = A.mean(axis=0) - B.mean(axis=0)
    e = np.var(d_i, ddof=1) / 4
    a_part = (su2 + ra) / 2 + (su2 + rb) / 2
    b_part = max(e - ra / 2 - rb / 2, 0.0)
    v = a_part + b_part
    from scipy.stats import chi2
    a_up = a_part * df_u / chi2.ppf(0.10, df_u)  # the checkpoint part at its one-sided 90 % upper bound
    df = (a_up + b_part) ** 2 / (a_up ** 2 / df_u + e ** 2 / 3)
    c = stats.compare(A, B, cv=stats.checkpoint_variance([A, B]))
    assert c.difference == pytest.approx(A.mean() - B.mean())
    assert c.se == pytest.approx(math.sqrt(v)) and c.df == pytest.approx(df)
    assert c.p_value == pytest.approx(2 * student.sf(c.difference / c.se, df))
    assert (c.low, c.high) == pytest.approx((c.difference - student.ppf(0.975, df) * c.se,
                                             c.difference + student.ppf(0.975, df) * c.se))
    # the same tables as a claim about these checkpoints: the example variance alone, n − 1 degrees of freedom
    checkpoints = stats.compare(A, B)
    assert checkpoints.se == pytest.approx(math.sqrt(e)) and checkpoints.df == 3
    # against a fixed model (the base model): only a's checkpoints vary
    base = stats.compare(A, B[:1], cv=stats.checkpoint_variance([A]), b_fixed=True)
    d_base = A.mean(axis=0) - B[0]
    a_only = (sa - ra + ra) / 2
    b_only = max(np.var(d_base, ddof=1) / 4 - ra / 2, 0.0)
    assert base.se == pytest.approx(math.sqrt(a_only + b_only))


def test_paired_comparison_hand_computation_one_seed():
    a, b = np.array([1.0, 1, 1, 0, 1, 1]), np.array([0.0, 0, 1, 0, 1, 0])
    d = a - b
    se = d.std(ddof=1) / math.sqrt(6)
    c = stats.compare(a, b)
    assert c.difference == pytest.approx(0.5) and c.se == pytest.approx(se)
    assert c.p_value == pytest.approx(2 * student.sf(0.5 / se, 5))
    assert (c.low, c.high) == pytest.approx((0.5 - student.ppf(0.975, 5) * se, 0.5 + student.ppf(0.975, 5) * se))
    with pytest.raises(ValueError, match="same examples"):
        stats.compare(np.stack([a, a]), np.stack([b[:5], b[:5]]))


def test_a_copied_checkpoint_is_one_seed():
    """One checkpoint copied as three seeds counts once: the one-seed variance, and no checkpoint variance."""
    a, b = _bernoulli(0.6, 200, 1), _bernoulli(0.6, 200, 2)
    kept, dropped = stats.distinct_seeds(np.stack([a, a, a]))
    assert kept.shape == (1, 200) and dropped == 2
    assert stats.compare(np.stack([a] * 3), np.stack([b] * 3)).se == pytest.approx(stats.compare(a, b).se)
    assert not stats.checkpoint_variance([np.stack([a] * 3), np.stack([b] * 3)]).measured


def test_the_pooled_checkpoint_variance_is_unbiased():
    """Over many simulated models (2 methods × 3 seeds × 300 examples, a checkpoint offset of sd 0.03 on the
    probability of each answer), the estimate averages σ_u² = 0.03² within Monte-Carlo error; with no offset, 0."""
    rng = np.random.default_rng(5)
    for sd in (0.0, 0.03):
        estimates = []
        for _ in range(400):
            p = rng.beta(3, 2, (1, 1, 300))
            x = (rng.random((2, 3, 300)) < np.clip(p + rng.normal(0, sd, (2, 3, 1)), 0, 1)).astype(float)
            estimates.append(stats.checkpoint_variance(list(x)).value)
        se = np.std(estimates) / math.sqrt(len(estimates))
        assert abs(np.mean(estimates) - sd ** 2) < 3 * se


def test_power_and_examples_needed_at_a_level():
    # the normal-approximation planning figure: n · se² / (δ / (z_{1−α/2} + z_0.8))², larger at α = 0.01 than at 0.05
    z05, z01 = 1.959964 + 0.841621, 2.575829 + 0.841621
    assert stats.examples_needed(0.1, 0.05, 100) == pytest.approx(100 * (z05 * 0.5) ** 2, rel=1e-5)
    assert stats.examples_needed(0.1, 0.05, 100, alpha=0.01) == pytest.approx(100 * (z01 * 0.5) ** 2, rel=1e-5)
    assert stats.examples_needed(0.0, 0.05, 100) == math.inf
    # the checkpoint part of se² does not shrink with examples: alone larger than (δ/z)², no n suffices
    assert stats.examples_needed(0.1, 0.05, 100, seed_part=0.002) == math.inf
    assert stats.examples_needed(0.1, 0.05, 100, seed_part=0.0005) == pytest.approx(
        100 * (0.0025 - 0.0005) / ((0.1 / z05) ** 2 - 0.0005), rel=1e-5)
    assert stats.power(0.1, 0.05, 1e9, 0.05) == pytest.approx(0.516, abs=0.002)  # Φ(2 − 1.96) + Φ(−3.96)


def test_bonferroni_and_the_fallback_interval_over_seeds():
    assert list(stats.bonferroni([0.04, 0.01, 0.5])) == pytest.approx([0.12, 0.03, 1.0])
    low, high = stats.t_interval_over_seeds([0.5, 0.6, 0.7])
    half = student.ppf(0.975, 2) * 0.1 / math.sqrt(3)  # t with k − 1 = 2 degrees of freedom, not z
    assert (low, high) == pytest.approx((0.6 - half, 0.6 + half))


def test_non_finite_values_are_refused():
    with pytest.raises(ValueError, match="finite"):
        stats.interval([1.0, float("nan"), 0.0])
