"""The spectral criteria's scores (docs/criteria.md): κ and α against an independent float64 reference (numpy's
SVD, α by its definition in plain Python) to 1e-4, a planted power law's α, the error estimates that decide the
precision, degenerate matrices, and the scan writing every score."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from snrtune import criteria
from snrtune.spectrum import scan as scan_module
from snrtune.spectrum import scores
from snrtune.spectrum.snr import exact_singular_values, gram_moves, gram_singular_values, snr_from_singular_values
from test_snr import _hard_float32_cases

TOLERANCE = 1e-4


def reference_singular_values(weight) -> list[float]:
    return np.linalg.svd(np.asarray(weight, dtype=np.float64), compute_uv=False).tolist()


def reference_alpha(singular: list[float], n: int, m: int) -> float:
    """α by its definition, one candidate at a time: singular values at or below sqrt(max(n, m))·eps64·σ_max are
    zero; eigenvalues λ = σ² ascending; every distinct positive λ below the largest is a candidate x_min; its tail
    is every λ ≥ x_min (n values); α = 1 + n / Σ ln(λ/x_min); the KS distance is the largest |F − P| on both sides
    of each step of the tail's empirical CDF F, P(y) = 1 − (y/x_min)^(1−α); the smallest distance wins, the
    smallest x_min among equal ones."""
    floor = math.sqrt(max(n, m)) * np.finfo(np.float64).eps * max(singular)
    lam = sorted(s * s for s in singular if s > floor)
    best = None
    for x_min in sorted(set(lam))[:-1]:
        tail = [v for v in lam if v >= x_min]
        n = len(tail)
        alpha = 1 + n / sum(math.log(v / x_min) for v in tail)
        distance = 0.0
        for rank, value in enumerate(tail):
            fitted = 1 - (value / x_min) ** (1 - alpha)
            distance = max(distance, abs(rank / n - fitted), abs((rank + 1) / n - fitted))
        if best is None or distance < best[0]:
            best = (distance, alpha)
    return best[1] if best else math.nan


def test_kappa_and_alpha_are_within_1e4_of_the_float64_reference_on_the_hard_matrices():
    """Noise, low rank plus noise, decaying spectra, dead columns: the precision the scan chooses per matrix
    brings every score within 1e-4 of numpy's float64 SVD (κ) and of the definition computed on it (α)."""
    worst = {"snr": 0.0, "kappa": 0.0, "alpha": 0.0}
    tiers = set()
    for weights in _hard_float32_cases():
        n, m = weights.shape[-2:]
        singular, computed_in = exact_singular_values(weights, criteria.spectral())
        tiers |= set(computed_in)
        for i in range(weights.shape[0]):
            exact = reference_singular_values(weights[i])
            reference = {"kappa": exact[0] / exact[-1], "alpha": reference_alpha(exact, n, m),
                         "snr": float(snr_from_singular_values(torch.tensor(exact, dtype=torch.float64), n, m)["snr"])}
            for name, function in (("snr", scores.snr), ("kappa", scores.kappa), ("alpha", scores.alpha)):
                value = float(function(singular[i:i + 1], n, m)[0])
                worst[name] = max(worst[name], abs(value / reference[name] - 1))
    assert max(worst.values()) <= TOLERANCE, worst
    assert tiers == {"float64", "float64 svd"}  # each tier is needed by some matrix


def test_each_estimate_is_above_the_real_float32_error():
    """float32 Gram eigenvalues alone put κ far off (σ_min is lost): the estimates see it, so the scan redoes
    those matrices; wherever an estimate is small, so is the real error."""
    worst = 0.0
    for weights in _hard_float32_cases():
        n, m = weights.shape[-2:]
        exact = torch.linalg.svdvals(weights.double())
        float32 = gram_singular_values(weights, dtype=torch.float32).double()
        moves = gram_moves(float32, n, m, torch.finfo(torch.float32).eps)
        for function, estimate in ((scores.kappa, scores.kappa_error), (scores.alpha, scores.alpha_error)):
            error = (function(float32, n, m) / function(exact, n, m) - 1).abs().nan_to_num(math.inf)
            assert (error <= estimate(float32, n, m, *moves)).all()
            worst = max([worst, *(e for e in error.tolist() if math.isfinite(e))])
    assert worst > 1e-2


def test_alpha_of_a_planted_power_law():
    """Eigenvalues at the quantiles of a power law of exponent 3 above x_min = 1 (λ_j = (1 − u_j)^(−1/2)), in a
    matrix with random singular vectors: the fit finds the exponent (to the few percent a sample of 300 allows)
    and agrees with the definition to 1e-4."""
    k, planted = 300, 3.0
    lam = (1 - (np.arange(k) + 0.5) / k) ** (-1 / (planted - 1))
    generator = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(400, k, dtype=torch.float64, generator=generator))
    v, _ = torch.linalg.qr(torch.randn(k, k, dtype=torch.float64, generator=generator))
    weight = (u * torch.tensor(np.sqrt(lam))) @ v.T
    singular, _ = exact_singular_values(weight.float()[None], criteria.spectral())
    alpha = float(scores.alpha(singular, 400, k)[0])
    assert alpha == pytest.approx(planted, rel=0.05)
    assert alpha == pytest.approx(reference_alpha(reference_singular_values(weight.float()), 400, k), rel=TOLERANCE)


@pytest.mark.parametrize("singular", [
    [4.0, 3.0, 2.0, 1.0],                # four values: three candidates
    [3.0, 2.0, 2.0, 2.0, 1.0, 1.0],      # equal values: a candidate's tail is every value at or above it
    [5.0, 1.0, 0.0, 0.0],                # zeros are not in any tail
    [2.0, 2.0, 2.0],                     # one distinct value: no candidate
])
def test_alpha_follows_its_definition_on_small_spectra(singular):
    value = float(scores.alpha(torch.tensor([singular], dtype=torch.float64), 8, len(singular))[0])
    expected = reference_alpha(singular, 8, len(singular))
    assert (math.isnan(value) and math.isnan(expected)) or value == pytest.approx(expected, rel=1e-12)


def test_degenerate_matrices_get_no_kappa_or_alpha_and_are_not_ranked_by_them():
    """A zero matrix has neither score; a matrix with a dead column is numerically rank-deficient: no κ (its σ_min
    cannot be told from zero in float64), and α of its other eigenvalues; weights near the float32 limit whose
    other singular values vanish beside the largest keep their SNR."""
    torch.manual_seed(0)
    dead = torch.randn(24, 16)
    dead[:, 3] = 0
    huge = torch.randn(24, 16)
    huge[:2, 0] = 3e38
    zero, rank_deficient, spike = scan_module.compute_group(torch.stack([torch.zeros(24, 16), dead, huge]), "gram",
                                                            torch.float32, "cpu")
    assert zero["status"] == "ok" and zero["snr"] == 0.0 and zero["kappa"] is None and zero["alpha"] is None
    assert rank_deficient["kappa"] is None and rank_deficient["computed_in"] == "float64 svd"
    assert rank_deficient["alpha"] == pytest.approx(reference_alpha(reference_singular_values(dead), 24, 16),
                                                    rel=TOLERANCE)
    assert spike["status"] == "ok" and spike["kappa"] is None and spike["alpha"] is None
    assert spike["snr"] == pytest.approx(float(snr_from_singular_values(torch.linalg.svdvals(huge.double()),
                                                                        24, 16)["snr"]), rel=1e-9)


def test_the_scan_writes_every_criterions_score_for_every_matrix(tiny_llama, tmp_path):
    result = scan_module.scan(tiny_llama, tmp_path / "snr.json")
    weights = load_file(tiny_llama / "model.safetensors")
    for module in result["modules"]:
        if "tied_to" in module:  # lm_head: the embedding's entry, scanned once
            assert module["kappa"] == next(m["kappa"] for m in result["modules"] if m["name"] == module["tied_to"])
            continue
        exact = reference_singular_values(weights[module["param"]])
        assert module["kappa"] == pytest.approx(exact[0] / exact[-1], rel=TOLERANCE)
        assert module["alpha"] == pytest.approx(reference_alpha(exact, *module["shape"]), rel=TOLERANCE)
        assert module["computed_in"] in ("float64", "float64 svd")
