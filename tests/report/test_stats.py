"""snrtune.report.stats against hand computations, exact coverage and fixed-seed simulations (vectorised: fast)."""

import math

import numpy as np
import pytest
from scipy.stats import binom

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


def test_crossed_variance_hand_computation():
    """2 seeds × 3 examples: MS_seed = 3·Σ(x̄_s − x̄)²/1, MS_example = 2·Σ(x̄_i − x̄)²/2, V = (MS_s + MS_e)/6."""
    x = np.array([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    mean = 5 / 6
    ms_seed = 3 * ((2 / 3 - mean) ** 2 + (1 - mean) ** 2)
    ms_example = 2 * ((1 - mean) ** 2 + (0.5 - mean) ** 2 + (1 - mean) ** 2) / 2
    s = stats.spread(x)
    assert s.mean == pytest.approx(mean) and s.variance == pytest.approx((ms_seed + ms_example) / 6)
    assert s.df == pytest.approx((ms_seed + ms_example) ** 2 / (ms_seed ** 2 + ms_example ** 2 / 2))
    one = stats.spread(x[0])
    assert one.variance == pytest.approx(np.var(x[0], ddof=1) / 3) and one.df == 2 and one.seed_variance == 0


def test_copied_checkpoint_is_not_three_seeds():
    """One checkpoint copied as three seeds gives the one-seed variance, not its third."""
    d = _bernoulli(0.6, 200, 1) - _bernoulli(0.6, 200, 2)
    assert stats.spread(np.stack([d] * 3)).variance == pytest.approx(stats.spread(d).variance, rel=1e-9)


def _null_tables(rng, replicates, k, n, spread, lead=0.0):
    """Two methods on the same n examples (shared difficulty), each seed a checkpoint offset N(0, spread)."""
    p = rng.beta(3, 2, size=(replicates, 1, n))
    a = rng.random((replicates, k, n)) < np.clip(p + lead + rng.normal(0, spread, (replicates, k, 1)), 0, 1)
    b = rng.random((replicates, k, n)) < np.clip(p + rng.normal(0, spread, (replicates, k, 1)), 0, 1)
    return a.astype(float), b.astype(float)


@pytest.mark.parametrize("spread", [0.02, 0.04])
def test_null_false_winner_rate_with_seed_spread_stays_at_alpha(spread):
    """3 seeds, n = 200, two methods equal in expectation with a 2–4 point checkpoint spread: ≤ 6 % rejections
    (the per-pair sign flip gave 11–14 %)."""
    rng = np.random.default_rng(11)
    a, b = _null_tables(rng, 1500, 3, 200, spread)
    rejected = np.mean([stats.compare(a[r], b[r]).p_value < stats.ALPHA for r in range(len(a))])
    assert rejected <= 0.06


def test_a_consistent_20_point_lead_over_3_seeds_is_detected():
    rng = np.random.default_rng(12)
    a, b = _null_tables(rng, 200, 3, 200, 0.01, lead=0.2)
    results = [stats.compare(a[r], b[r]) for r in range(len(a))]
    assert all(c.difference > 0 for c in results)
    assert np.mean([c.p_value < stats.ALPHA / 10 for c in results]) >= 0.6  # a 10-comparison Holm family


def test_paired_comparison_hand_computation_one_seed():
    a, b = np.array([1.0, 1, 1, 0, 1, 1]), np.array([0.0, 0, 1, 0, 1, 0])
    d = a - b
    se = d.std(ddof=1) / math.sqrt(6)
    c = stats.compare(a, b)
    from scipy.stats import t
    assert c.difference == pytest.approx(0.5) and c.se == pytest.approx(se)
    assert c.p_value == pytest.approx(2 * t.sf(0.5 / se, 5))
    assert (c.low, c.high) == pytest.approx((0.5 - t.ppf(0.975, 5) * se, 0.5 + t.ppf(0.975, 5) * se))
    with pytest.raises(ValueError, match="same seeds and examples"):
        stats.compare(np.stack([a, a]), np.stack([b, b, b]))


def test_power_and_examples_needed_at_the_corrected_level():
    # the normal-approximation planning figure: n · se² / (δ / (z_{1−α/2} + z_0.8))², larger at α = 0.01 than at 0.05
    z05, z01 = 1.959964 + 0.841621, 2.575829 + 0.841621
    assert stats.examples_needed(0.1, 0.05, 100) == pytest.approx(100 * (z05 * 0.5) ** 2, rel=1e-5)
    assert stats.examples_needed(0.1, 0.05, 100, alpha=0.01) == pytest.approx(100 * (z01 * 0.5) ** 2, rel=1e-5)
    assert stats.examples_needed(0.0, 0.05, 100) == math.inf
    # a seed term alone larger than (δ/z)² cannot be beaten with examples
    assert stats.examples_needed(0.1, 0.05, 100, n_seeds=2, seed_variance=0.01) == math.inf
    assert stats.power(0.1, 0.05, 1e9, 0.05) == pytest.approx(0.516, abs=0.002)  # Φ(2 − 1.96) + Φ(−3.96)


def test_holm_adjusts_step_down():
    assert list(stats.holm([0.04, 0.01, 0.02])) == pytest.approx([0.04, 0.03, 0.04])
    assert list(stats.holm([0.5, 0.6])) == pytest.approx([1.0, 1.0])


def test_non_finite_values_are_refused():
    with pytest.raises(ValueError, match="finite"):
        stats.interval([1.0, float("nan"), 0.0])
