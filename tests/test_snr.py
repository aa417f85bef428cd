"""The SNR formula against hand computations (DESIGN.md, "The SNR")."""

import math

import pytest
import torch

from snrtune.snr import (fast_singular_values, gram_singular_values, module_type, reference_snr,
                         snr_from_singular_values)


def test_hand_computed_4x6_example():
    # W = [diag(4, 3, 2, 1) | 0]: singular values exactly 4, 3, 2, 1
    weight = torch.zeros(4, 6)
    weight[range(4), range(4)] = torch.tensor([4.0, 3.0, 2.0, 1.0])
    singular = gram_singular_values(weight.unsqueeze(0))[0]
    assert singular.tolist() == pytest.approx([4.0, 3.0, 2.0, 1.0], abs=1e-12)
    parts = snr_from_singular_values(singular, 4, 6)
    # ascending 1,2,3,4: q25 = 1 + 0.75*(2-1) = 1.75, q75 = 3 + 0.25*(4-3) = 3.25 (linear interpolation)
    sigma = (3.25 - 1.75) / 1.349
    threshold = sigma * (1 + math.sqrt(4 / 6))  # = 2.0198...
    assert float(parts["sigma"]) == pytest.approx(sigma, rel=1e-12)
    assert float(parts["threshold"]) == pytest.approx(threshold, rel=1e-12)
    assert float(parts["signal"]) == pytest.approx(4 + 3)
    assert float(parts["noise"]) == pytest.approx(2 + 1)
    assert float(parts["s_max"]) == pytest.approx(4.0)
    assert float(parts["snr"]) == pytest.approx((7 / 3) / 4, rel=1e-12)
    assert reference_snr(weight) == pytest.approx((7 / 3) / 4, rel=1e-6)


def test_empty_noise_set_counts_noise_as_one():
    # identity: all singular values 1, IQR 0, threshold 0, everything is signal, noise falls back to 1.0
    parts = snr_from_singular_values(torch.ones(4, dtype=torch.float64), 4, 4)
    assert float(parts["noise"]) == 1.0
    assert float(parts["snr"]) == pytest.approx(4.0 / 1.0 / 1.0)


def test_one_dimensional_weight_scores_one_like_the_reference():
    assert reference_snr(torch.rand(16) + 0.5) == pytest.approx(1.0)


def test_zero_matrix_has_zero_snr_not_nan():
    assert float(snr_from_singular_values(torch.zeros(3, dtype=torch.float64), 3, 5)["snr"]) == 0.0


def test_gram_matches_svd_in_batches_and_both_orientations():
    torch.manual_seed(0)
    for shape in [(3, 40, 24), (2, 24, 40)]:
        weights = torch.randn(*shape)
        gram = gram_singular_values(weights, row_chunk=7)
        exact = torch.linalg.svdvals(weights.double())
        assert torch.allclose(gram, exact, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name, expected", [
    ("model.layers.12.self_attn.q_proj", ("self_attn.q_proj", 12, None)),
    ("transformer.h.0.attn.c_attn", ("attn.c_attn", 0, None)),
    ("model.layers.3.block_sparse_moe.experts.5.w1", ("block_sparse_moe.experts.w1", 3, 5)),
    ("lm_head", ("lm_head", None, None)),
    ("model.embed_tokens", ("model.embed_tokens", None, None)),
])
def test_module_type(name, expected):
    assert module_type(name) == expected


def test_fast_path_redoes_ill_conditioned_matrices_in_float64():
    """A rank-8 matrix with 1e-4 noise: float32 Gram eigenvalues are 1.6% off on the SNR; the fast path notices
    (its error estimate) and redoes it in float64, landing within 1e-4 of the reference."""
    torch.manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(512, 8))
    v, _ = torch.linalg.qr(torch.randn(256, 8))
    weight = u @ torch.diag(torch.linspace(2, 1, 8)) @ v.T + 1e-4 * torch.randn(512, 256)
    reference = reference_snr(weight)
    float32_only = gram_singular_values(weight[None], dtype=torch.float32)[0].double()
    assert abs(float(snr_from_singular_values(float32_only, 512, 256)["snr"]) / reference - 1) > 1e-3
    fast = fast_singular_values(weight[None])[0]
    assert float(snr_from_singular_values(fast, 512, 256)["snr"]) == pytest.approx(reference, rel=1e-4)
