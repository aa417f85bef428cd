"""The spectral criteria's scores and their error estimates (snrtune.criteria names them; docs/criteria.md defines
them). Each score takes a batch (..., k) of singular values (float64, descending) of n×m matrices and returns one
value per matrix, NaN where it is not defined; each error estimate also takes the estimated move of every singular
value and which values are mostly rounding (snrtune.spectrum.snr.gram_moves) and returns the estimated relative
error of the score, which decides how precisely `snrtune scan` computes the spectrum."""

from __future__ import annotations

import math

import torch

from snrtune.spectrum.snr import snr_error as _snr_error
from snrtune.spectrum.snr import one_thread, snr_from_singular_values


def snr(singular: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Spectrum's signal-to-noise ratio (Hartford et al. 2024, arXiv:2406.06623; docs/snr.md, "The formula")."""
    return snr_from_singular_values(singular, n, m)["snr"]


def snr_error(singular, n, m, moved, rounding) -> torch.Tensor:
    return _snr_error(singular, n, m, moved, rounding)


def resolution(singular: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """sqrt(max(n, m))·eps64·σ_max (…, 1): a singular value at or below it cannot be told from zero in float64 (a
    float64 SVD's error is about that large), so the criteria take it as zero."""
    return math.sqrt(max(n, m)) * torch.finfo(torch.float64).eps * singular[..., :1]


def resolved(singular: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """The singular values, those at or below ``resolution`` set to zero."""
    return torch.where(singular > resolution(singular, n, m), singular, 0.0)


def kappa(singular: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """The condition number κ = σ_max / σ_min over the min(n, m) singular values (KappaTune; PEFT's
    KappaTuneSelector): NaN when σ_min is zero (at or below float64's ``resolution``: the matrix is numerically
    rank-deficient and has no finite κ)."""
    s_min = resolved(singular, n, m)[..., -1]
    return torch.where(s_min > 0, singular[..., 0] / torch.where(s_min > 0, s_min, 1.0), math.nan)


def kappa_error(singular, n, m, moved, rounding) -> torch.Tensor:
    """κ's relative error is σ_min's plus σ_max's; a σ_min that is mostly rounding is not resolved at all (inf)."""
    tiny = torch.finfo(torch.float64).tiny
    error = moved[..., -1] / singular[..., -1].clamp_min(tiny) + moved[..., 0] / singular[..., 0].clamp_min(tiny)
    error = torch.where(singular[..., 0] > 0, error, 0.0)  # a zero matrix: no κ, exactly
    return torch.where(rounding[..., -1], math.inf, error)


PAIRS = 1 << 18  # elements per block of the KS computation (2 MiB per block: the fastest on one thread)


def alpha_fit(singular: torch.Tensor, n: int, m: int, pairs: int = PAIRS) -> dict[str, torch.Tensor]:
    """The power-law fit of the eigenvalues λ = σ² of n×m matrices (docs/criteria.md, "Heavy-tail α"), batched.

    Singular values at or below float64's ``resolution`` count as zero. With λ ascending, each candidate x_min is
    a distinct positive eigenvalue below the largest; its tail is the
    n values λ_j ≥ x_min; the Hill (continuous maximum-likelihood) exponent is α = 1 + n / Σ ln(λ_j / x_min); its
    Kolmogorov–Smirnov distance D is the largest gap between the tail's empirical CDF and the fitted power law's
    CDF P(y) = 1 − (y / x_min)^(1−α), on both sides of each step. The fit is the candidate with the smallest D
    (the smallest x_min among equal ones).

    Returns {"alpha": per matrix (NaN without a candidate), "best": its candidate's index (ascending order),
    "alphas": α per candidate (…, k; NaN where no candidate), "distances": D per candidate (inf where none),
    "eigenvalues": λ ascending}.
    """
    with one_thread():
        return _fit(resolved(singular, n, m).flip(-1).square(), pairs)


def _fit(lam: torch.Tensor, pairs: int) -> dict[str, torch.Tensor]:
    """``alpha_fit`` of eigenvalues λ (…, k), ascending."""
    flat = lam.reshape(-1, lam.shape[-1])
    rows_count, k = flat.shape
    positive = flat > 0
    logs = torch.where(positive, flat, 1.0).log()
    tail = torch.arange(k, 0, -1, dtype=flat.dtype)  # n: values from position i on
    hill = logs.flip(-1).cumsum(-1).flip(-1) - tail * logs  # Σ_{j≥i} ln(λ_j / λ_i)
    candidate = positive.clone()
    candidate[:, 1:] &= flat[:, 1:] > flat[:, :-1]  # a distinct value: its tail is every λ ≥ it
    candidate[:, -1] = False
    candidate &= hill > 0
    exponent = torch.where(candidate, -tail / torch.where(candidate, hill, 1.0), -1.0)  # 1 − α
    # with u = (λ_j/λ_i)^(1−α) = 1 − P and r = j − i: max(|r/n − P|, |(r+1)/n − P|) = |u − (k−j−½)/n| + ½/n
    steps = torch.arange(k, dtype=flat.dtype).neg().add(k - 0.5)
    distances = torch.full_like(flat, math.inf)
    block = max(1, pairs // max(1, rows_count * k))
    for start in range(0, k - 1, block):
        stop = min(start + block, k - 1)
        gap = logs[:, None, start:] - logs[:, start:stop, None]  # (B, I, J): ln λ_j − ln λ_i
        u = gap.mul_(exponent[:, start:stop, None]).exp_()
        u.sub_(steps[None, None, start:] / tail[None, start:stop, None]).abs_()
        u.masked_fill_((torch.arange(start, k)[None, :] < torch.arange(start, stop)[:, None])[None], 0)
        distances[:, start:stop] = torch.where(candidate[:, start:stop], u.amax(-1) + 0.5 / tail[start:stop], math.inf)
    best = distances.argmin(-1)
    alphas = torch.where(candidate, 1 - exponent, math.nan)
    alpha = torch.where(candidate.any(-1), alphas.gather(-1, best[:, None])[:, 0], math.nan)
    shape = lam.shape[:-1]
    return {"alpha": alpha.reshape(shape), "best": best.reshape(shape), "alphas": alphas.reshape(lam.shape),
            "distances": distances.reshape(lam.shape), "eigenvalues": lam}


def alpha(singular: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """The heavy-tail exponent α of the eigenvalue spectrum λ = σ² (WeightWatcher: Martin & Mahoney 2021, JMLR
    22(165); AlphaLoRA: Qing et al. 2024): the Hill exponent of the power-law tail whose x_min minimises the
    Kolmogorov–Smirnov distance (``alpha_fit``). NaN without two distinct positive eigenvalues."""
    return alpha_fit(singular, n, m)["alpha"]


def alpha_error(singular, n, m, moved, rounding) -> torch.Tensor:
    """α's estimated relative error when each eigenvalue λ_j moves by the relative ε_j = 2·moved_j / σ_j (inf for a
    value that is mostly rounding):

    - the Hill sum of candidate i moves by at most Σ_{j≥i} ε_j + n_i·ε_i, so α_i − 1 = n_i / S_i by (α_i − 1)·ΔS_i/S_i;
    - its KS distance moves by at most (α_i − 1)·(max_{j≥i} ε_j + ε_i) + Δα_i / (e·(α_i − 1)) (the fitted CDF's
      slopes in ln λ_j, ln x_min and α);
    - a candidate whose distance could fall to the chosen one's (both moved by their bounds) may be chosen
      instead: the gap between its α and the chosen α (plus its own move) counts in full, as the SNR's side
      changes do;
    - a spectrum with a value that is mostly rounding is not resolved (inf): that value may be a candidate.
    """
    fit = alpha_fit(singular, n, m)
    alphas, distances = fit["alphas"], fit["distances"]
    tiny = torch.finfo(torch.float64).tiny
    relative = torch.where(rounding, math.inf, 2 * moved / singular.clamp_min(tiny)).flip(-1)  # ascending order
    k = relative.shape[-1]
    tail = torch.arange(k, 0, -1, dtype=relative.dtype)
    logs = fit["eigenvalues"].clamp_min(tiny).log()
    hill = logs.flip(-1).cumsum(-1).flip(-1) - tail * logs
    candidate = torch.isfinite(distances)
    spread = alphas - 1
    hill_move = relative.flip(-1).cumsum(-1).flip(-1) + tail * relative
    alpha_move = torch.where(candidate, spread * hill_move / torch.where(candidate, hill, 1.0), 0.0)
    largest = relative.flip(-1).cummax(-1).values.flip(-1)  # max_{j≥i} ε_j
    distance_move = torch.where(candidate, spread * (largest + relative)
                                + alpha_move / (math.e * torch.where(candidate, spread, 1.0)), 0.0)
    best = fit["best"].unsqueeze(-1)
    chosen = fit["alpha"]
    reach = distances.gather(-1, best) + distance_move.gather(-1, best)
    rivals = candidate & (distances - distance_move <= reach)
    rivals.scatter_(-1, best, False)
    jump = torch.where(rivals, (alphas - chosen.unsqueeze(-1)).abs() + alpha_move, 0.0).amax(-1)
    own = alpha_move.gather(-1, best).squeeze(-1)
    error = torch.where(torch.isnan(chosen), 0.0, (own + jump) / chosen.abs())
    # a value that is mostly rounding may be a candidate (or a tail member) of unknown distance: not resolved
    return torch.where(rounding.any(-1), math.inf, error)
