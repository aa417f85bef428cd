"""snrtune.report.stats against hand computations and planted effects (small samples, fixed seeds: fast and exact)."""

import math

import numpy as np
import pytest

from snrtune.report import stats


def _bernoulli(p, n, seed):
    return (np.random.default_rng(seed).random(n) < p).astype(float)


def test_bootstrap_ci_of_a_proportion_matches_the_normal_approximation():
    """400 Bernoulli(0.3) draws: the percentile bootstrap CI is p ± 1.96·sqrt(p(1-p)/n) to within 0.006."""
    x = _bernoulli(0.3, 400, seed=1)
    p = x.mean()
    half = 1.959964 * math.sqrt(p * (1 - p) / len(x))
    ci = stats.bootstrap_ci(x)
    assert ci.estimate == p and ci.n_examples == 400 and ci.n_seeds == 1
    assert ci.low == pytest.approx(p - half, abs=0.006) and ci.high == pytest.approx(p + half, abs=0.006)
    assert stats.bootstrap_ci(x) == ci  # fixed RNG seed: the same interval every time


def test_corpus_perplexity_is_recomputed_from_loglik_and_word_counts():
    docs = [[-10.0, 4], [-20.0, 6], [-5.0, 2]]  # (loglikelihood, words)
    assert stats.corpus_metric(docs, "weighted_perplexity", axis=0) == pytest.approx(math.exp(35 / 12))
    assert stats.corpus_metric(docs, "bits_per_byte", axis=0) == pytest.approx(35 / 12 / math.log(2))
    # not the mean of per-document perplexities
    assert stats.corpus_metric(docs, "weighted_perplexity", axis=0) != pytest.approx(
        np.mean([math.exp(10 / 4), math.exp(20 / 6), math.exp(5 / 2)]))
    ci = stats.bootstrap_ci(docs, "weighted_perplexity", resamples=500)
    assert ci.estimate == pytest.approx(math.exp(35 / 12)) and ci.low <= ci.estimate <= ci.high
    # a resample of documents 0, 0, 2 gives exp((10 + 10 + 5) / (4 + 4 + 2)): every replicate is such a ratio
    boot = stats.bootstrap_distribution(docs, "weighted_perplexity", resamples=200)
    assert boot.min() >= math.exp(5 / 2) - 1e-9 and boot.max() <= math.exp(20 / 6) + 1e-9


def test_paired_test_detects_a_planted_difference():
    rng = np.random.default_rng(3)
    b = (rng.random(300) < 0.5).astype(float)
    a = np.where(rng.random(300) < 0.25, 1.0, b)  # a = b, plus a correct answer on a quarter of b's misses
    result = stats.compare(a, b)
    assert result.difference == pytest.approx(a.mean() - b.mean()) and result.difference > 0.1
    assert result.p_value < 0.01
    assert 0 < result.low < result.difference < result.high
    assert result.examples_needed < 300  # already separated with 300 examples


def test_paired_test_does_not_flag_a_null_difference():
    a, b = _bernoulli(0.5, 200, seed=10), _bernoulli(0.5, 200, seed=11)
    result = stats.compare(a, b)
    assert result.p_value > 0.05 and result.low < 0 < result.high
    assert result.examples_needed > 200


def test_null_false_positive_rate_is_near_alpha():
    """200 null replicates (two independent runs of one model, 60 examples): about 5 % of p-values < 0.05."""
    rng = np.random.default_rng(7)
    rejections = 0
    for i in range(200):
        a, b = (rng.random(60) < 0.6).astype(float), (rng.random(60) < 0.6).astype(float)
        rejections += stats.sign_flip_pvalue(a, b, resamples=399, seed=i) < 0.05
    assert 0.02 <= rejections / 200 <= 0.09


def test_sign_flip_pvalue_equals_the_exact_enumeration():
    """Three discordant pairs all favouring a: exact two-sided p = 2/8; the Monte Carlo estimate is close."""
    a, b = np.array([1.0, 1, 1, 0, 1]), np.array([0.0, 0, 0, 0, 1])
    assert stats.sign_flip_pvalue(a, b, resamples=20000) == pytest.approx(0.25, abs=0.015)


def test_examples_needed_hand_computation():
    # se 0.05 at n=100, difference 0.1: n · ((1.95996 + 0.84162) · 0.5)² = 100 · 1.96222 = 196.2
    assert stats.examples_needed(0.1, 0.05, 100) == pytest.approx(100 * (2.801585 * 0.5) ** 2, rel=1e-5)
    assert stats.examples_needed(0.0, 0.05, 100) == math.inf


def test_several_seeds_resample_seeds_then_examples():
    """Seeds whose scores differ a lot (0.2, 0.5, 0.8 on 1000 examples each): the estimate is the mean of the
    seed scores and the interval reflects the spread between seeds, not the ±0.02 of the pooled examples."""
    seeds = np.stack([_bernoulli(p, 1000, seed=20 + i) for i, p in enumerate((0.2, 0.5, 0.8))])
    ci = stats.bootstrap_ci(seeds)
    assert ci.n_seeds == 3 and ci.n_examples == 1000
    assert ci.estimate == pytest.approx(seeds.mean(axis=1).mean())
    assert ci.low < 0.4 and ci.high > 0.6
    pooled = stats.bootstrap_ci(seeds.reshape(-1))
    assert pooled.high - pooled.low < 0.05
    # equal seeds: about the single-seed interval shrunk by sqrt(3) (three independent example resamples)
    same = stats.bootstrap_ci(np.stack([seeds[1]] * 3))
    one = stats.bootstrap_ci(seeds[1])
    assert (same.high - same.low) == pytest.approx((one.high - one.low) / math.sqrt(3), rel=0.1)


def test_paired_comparison_over_seeds_pairs_by_seed_and_example():
    rng = np.random.default_rng(5)
    b = (rng.random((3, 120)) < np.array([[0.3], [0.5], [0.7]])).astype(float)  # seeds differ
    a = np.where(rng.random((3, 120)) < 0.3, 1.0, b)
    result = stats.compare(a, b)
    assert result.n_seeds == 3 and result.difference == pytest.approx((a.mean(axis=1) - b.mean(axis=1)).mean())
    assert result.p_value < 0.01
    with pytest.raises(ValueError, match="same seeds and examples"):
        stats.compare(a[:2], b)


def test_holm_adjusts_step_down():
    # sorted p: 0.01·3 = 0.03, 0.02·2 = 0.04, 0.04·1 = 0.04 (monotone), back in input order
    assert list(stats.holm([0.04, 0.01, 0.02])) == pytest.approx([0.04, 0.03, 0.04])
    assert list(stats.holm([0.5, 0.6])) == pytest.approx([1.0, 1.0])
