"""The SNR formula (docs/snr.md) against hand computations."""

import math

import pytest
import torch

from snrtune import criteria
from snrtune.spectrum.snr import (eigvalsh, exact_singular_values, gram_matrix, gram_moves, gram_singular_values,
                                  module_type, reference_snr, snr_error, snr_from_singular_values)


def float32_gram_error(singular, n, m):
    """The SNR's error estimate when the Gram eigenvalues carry float32 rounding (where it can be checked)."""
    return snr_error(singular, n, m, *gram_moves(singular, n, m, torch.finfo(torch.float32).eps))


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


def test_the_svd_redo_takes_what_float64_gram_eigenvalues_cannot_resolve():
    """A rank-8 matrix with 1e-9 noise: its σ_min is below what float64 Gram eigenvalues resolve, so κ's estimate
    sends it to the float64 SVD, landing every score within 1e-4 of the reference; a plain noise matrix stays with
    the Gram eigenvalues."""
    torch.manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(512, 8, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(256, 8, dtype=torch.float64))
    weight = (u @ torch.diag(torch.linspace(2, 1, 8, dtype=torch.float64)) @ v.T
              + 1e-9 * torch.randn(512, 256, dtype=torch.float64)).float()
    singular, computed_in = exact_singular_values(torch.stack([weight, torch.randn(512, 256)]), criteria.spectral())
    assert computed_in == ["float64 svd", "float64"]
    exact = torch.linalg.svdvals(weight.double())
    assert float(singular[0, -1]) == pytest.approx(float(exact[-1]), rel=1e-4)
    assert float(snr_from_singular_values(singular[0], 512, 256)["snr"]) == \
        pytest.approx(float(snr_from_singular_values(exact, 512, 256)["snr"]), rel=1e-4)


def test_the_gram_matrix_is_the_symmetric_product_in_both_orientations_and_any_chunking():
    torch.manual_seed(0)
    for shape, chunk in [((3, 40, 24), 7), ((2, 24, 40), 5), ((2, 30, 30), 2048)]:
        weights = torch.randn(*shape)
        wide = shape[-2] < shape[-1]
        exact = weights.double() @ weights.double().transpose(-1, -2) if wide else \
            weights.double().transpose(-1, -2) @ weights.double()
        for dtype, tolerance in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
            assert torch.allclose(gram_matrix(weights, chunk, dtype).double(), exact, rtol=tolerance, atol=tolerance)


def _hard_float32_cases():
    """Matrices that stress float32 Gram eigenvalues: noise, low rank plus noise, decaying spectra, dead columns."""
    torch.manual_seed(1)
    for shape in [(192, 96), (96, 160)]:
        k = min(shape)
        yield torch.randn(3, *shape)
        for rank, noise in [(16, 1e-2), (16, 1e-4), (4, 1e-5)]:
            low = torch.randn(3, shape[0], rank) @ torch.randn(3, rank, shape[1]) / math.sqrt(rank)
            yield low + noise * torch.randn(3, *shape)
        u, _, v = torch.linalg.svd(torch.randn(3, *shape), full_matrices=False)
        for decay in (1e-2, 1e-4, 1e-5):
            yield (u * torch.logspace(0, math.log10(decay), k)) @ v
        dead = torch.randn(3, *shape)
        dead[..., :5] *= 1e-5
        yield dead


def test_the_error_estimate_bounds_the_real_error_and_the_scan_meets_1e4():
    """The SNR's estimate, checked where rounding is large enough to measure (float32 Gram eigenvalues): on every
    hard case it is above the real error; with float64 rounding (what the scan computes in) every SNR lands within
    1e-4 of the exact one."""
    worst = 0.0
    for weights in _hard_float32_cases():
        n, m = weights.shape[-2:]
        exact = snr_from_singular_values(torch.linalg.svdvals(weights.double()), n, m)["snr"]
        float32 = gram_singular_values(weights, dtype=torch.float32).double()
        error = (snr_from_singular_values(float32, n, m)["snr"] / exact - 1).abs()
        assert (error <= float32_gram_error(float32, n, m)).all()
        worst = max(worst, float(error.max()))
        scanned = snr_from_singular_values(exact_singular_values(weights, criteria.spectral())[0], n, m)["snr"]
        assert ((scanned / exact - 1).abs() <= 1e-4).all()
    assert worst > 1e-2  # float32 alone is far off on some of them: the estimate sees it


def test_a_value_at_the_threshold_counts_as_a_possible_side_change():
    """A singular value sitting on the noise threshold may land on either side in float32: the estimate must
    then be at least the jump that causes (the value over the noise sum)."""
    torch.manual_seed(0)
    singular = torch.sort(torch.rand(2, 64, dtype=torch.float64), descending=True).values
    threshold = snr_from_singular_values(singular, 64, 128)["threshold"][1]
    nearest = int((singular[1] - threshold).abs().argmin())
    singular[1, nearest] = threshold  # the quartiles (and so the threshold) stay as they were
    parts = snr_from_singular_values(singular, 64, 128)
    assert float(parts["threshold"][1]) == float(threshold)
    estimate = float32_gram_error(singular, 64, 128)
    assert estimate[1] >= threshold / parts["noise"][1]
    assert estimate[0] < 1e-4


def test_threaded_eigenvalues_match_one_call_and_restore_the_thread_count():
    torch.manual_seed(0)
    weights = torch.randn(5, 40, 30, dtype=torch.float64)
    gram = weights.transpose(-1, -2) @ weights
    threads = torch.get_num_threads()
    assert torch.allclose(eigvalsh(gram), torch.linalg.eigvalsh(gram), rtol=1e-12, atol=1e-12)
    assert torch.allclose(eigvalsh(gram.reshape(5, 1, 30, 30)).reshape(5, 30), torch.linalg.eigvalsh(gram),
                          rtol=1e-12, atol=1e-12)
    assert torch.get_num_threads() == threads
