"""The random-matrix-theory signal-to-noise ratio of a weight matrix (defined in docs/snr.md).

For W (n×m) with singular values S (descending):
    sigma     = (q75(S) - q25(S)) / 1.349          (linear-interpolation quantiles)
    threshold = sigma * (1 + sqrt(min(n,m)/max(n,m)))
    signal    = sum(S[S > threshold])               (0 when empty)
    noise     = sum(S[S <= threshold])              (1.0 when empty, as the reference does)
    SNR       = (signal / noise) / S[0]
Everything here is batched over leading dimensions, so matrices of equal shape are processed together.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import torch

IQR_TO_SIGMA = 1.349


def module_type(name: str) -> tuple[str, int | None, int | None]:
    """(type, layer, expert) of a module name.

    The type is the name after the first all-digit component; later all-digit components (MoE expert
    indices) are dropped and the first of them is the expert. A name without digits is its own type.
    """
    parts = name.split(".")
    digits = [i for i, part in enumerate(parts) if part.isdigit()]
    if not digits:
        return name, None, None
    first = digits[0]
    rest = parts[first + 1:]
    expert = next((int(part) for part in rest if part.isdigit()), None)
    kept = [part for part in rest if not part.isdigit()]
    return ".".join(kept), int(parts[first]), expert


def eigvalsh(gram: torch.Tensor) -> torch.Tensor:
    """Eigenvalues (ascending) of a batch of symmetric matrices (..., n, n).

    On the CPU the batch is split over one thread per core, each running LAPACK single-threaded: for the
    few-hundred-wide matrices of small models this is about 1.5× faster than one multi-threaded call.
    """
    workers = torch.get_num_threads()
    flat = gram.reshape(-1, *gram.shape[-2:])
    if gram.device.type != "cpu" or workers < 2 or flat.shape[0] < 2:
        return torch.linalg.eigvalsh(gram)
    parts = flat.chunk(min(workers, flat.shape[0]))
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(len(parts)) as pool:
            values = list(pool.map(torch.linalg.eigvalsh, parts))
    finally:
        torch.set_num_threads(workers)
    return torch.cat(values).reshape(gram.shape[:-1])


def gram_matrix(weights: torch.Tensor, row_chunk: int = 2048, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The smaller Gram matrix of each matrix of a batch (..., n, m), accumulated in ``dtype`` chunk by chunk
    so memory stays near one matrix."""
    if weights.shape[-2] < weights.shape[-1]:
        weights = weights.transpose(-1, -2)
    rows, cols = weights.shape[-2], weights.shape[-1]
    gram = torch.zeros(*weights.shape[:-2], cols, cols, dtype=dtype, device=weights.device)
    for start in range(0, rows, row_chunk):
        chunk = weights[..., start:start + row_chunk, :].to(dtype)
        gram += chunk.transpose(-1, -2) @ chunk
    return gram


def gram_singular_values(weights: torch.Tensor, row_chunk: int = 2048,
                         dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Singular values (descending) of a batch of matrices (..., n, m) from the eigenvalues of the
    smaller Gram matrix, computed in ``dtype``."""
    return eigvalsh(gram_matrix(weights, row_chunk, dtype)).clamp_min(0).sqrt().flip(-1)


def float32_gram_error(singular: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Estimated relative error of the SNR of n×m matrices whose Gram eigenvalues were computed in float32.

    Rounding moves each eigenvalue by about delta = sqrt(max(n, m))·eps32·S_max², so a singular value s moves by
    about delta / (s + sqrt(delta)). Values well above sqrt(delta) move at random and their errors add in
    quadrature; values below 2·sqrt(delta) are mostly rounding, lifted by the clamp at zero, so their moves add
    up. Each sum (signal, noise) is judged against itself, and S_max's own move counts too. A value that lies
    within its move (plus the threshold's) of the threshold may change sides, which moves both sums by a whole
    value: that counts in full.
    """
    eps = torch.finfo(torch.float32).eps
    delta = math.sqrt(max(n, m)) * eps * singular[..., :1] ** 2
    root = delta.sqrt()
    moved = delta / (singular + root)
    rounding = singular < 2 * root
    parts = snr_from_singular_values(singular, n, m)
    threshold = parts["threshold"].unsqueeze(-1)
    tiny = torch.finfo(torch.float64).tiny
    zero = torch.zeros_like(moved)

    def sum_error(members: torch.Tensor) -> torch.Tensor:
        biased = torch.where(members & rounding, moved, zero).sum(-1)
        random = torch.where(members & ~rounding, moved, zero).pow(2).sum(-1).sqrt()
        return biased + random

    above = singular > threshold
    below = ~above
    noise_sum = torch.where(below, singular, zero).sum(-1).clamp_min(tiny)
    signal = parts["signal"].clamp_min(tiny)
    error = sum_error(above) / signal + torch.where(below.any(-1), sum_error(below) / noise_sum, 0.0)
    error = error + moved[..., 0] / singular[..., 0].clamp_min(tiny)  # the SNR divides by S_max too
    # the threshold is (1 + sqrt(beta)) / 1.349 times the IQR, whose ends move as the values at the quartiles do
    quartiles = torch.quantile(singular, torch.tensor([0.25, 0.75], dtype=singular.dtype), dim=-1)
    quartiles_moved = (delta.squeeze(-1) / (quartiles + root.squeeze(-1))).sum(0)
    threshold_moved = (quartiles_moved * (1 + math.sqrt(min(n, m) / max(n, m))) / IQR_TO_SIGMA).unsqueeze(-1)
    side_change = (singular - threshold).abs() <= moved + threshold_moved
    flips = torch.where(side_change, singular, zero).sum(-1)
    return error + flips * (1 / torch.minimum(noise_sum, parts["noise"]) + 1 / signal)


def fast_singular_values(weights: torch.Tensor, tolerance: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """(singular values, redone) of a batch: Gram eigenvalues in float32 (about 3× faster than an SVD on a CPU),
    redone in float64 for the matrices whose estimated SNR error exceeds ``tolerance`` (see
    ``float32_gram_error``; on every test matrix the real error is well below the estimate) and for those whose
    squares overflow float32; ``redone`` marks those."""
    gram = gram_matrix(weights, dtype=torch.float32)
    overflow = ~torch.isfinite(gram.flatten(-2).sum(-1))
    gram[overflow] = 0  # a placeholder: redone in float64 below
    singular = eigvalsh(gram).clamp_min(0).sqrt().flip(-1).double()
    del gram
    suspect = overflow | ~(float32_gram_error(singular, *weights.shape[-2:]) <= tolerance)
    if suspect.all():  # no indexing copy of the whole batch
        singular = gram_singular_values(weights, dtype=torch.float64)
    elif suspect.any():
        singular[suspect] = gram_singular_values(weights[suspect], dtype=torch.float64)
    return singular, suspect


def svd_singular_values(weights: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Singular values (descending) by a full SVD: the exact reference computation."""
    return torch.linalg.svdvals(weights.to(dtype))


def snr_from_singular_values(singular: torch.Tensor, n: int, m: int) -> dict[str, torch.Tensor]:
    """SNR and its parts for a batch of singular-value vectors (..., k) of n×m matrices."""
    s_max = singular[..., 0]
    q75 = torch.quantile(singular, 0.75, dim=-1)
    q25 = torch.quantile(singular, 0.25, dim=-1)
    sigma = (q75 - q25) / IQR_TO_SIGMA
    beta = min(n, m) / max(n, m)
    threshold = sigma * (1.0 + math.sqrt(beta))
    above = singular > threshold.unsqueeze(-1)
    signal = torch.where(above, singular, torch.zeros_like(singular)).sum(-1)
    noise_set = ~above
    noise = torch.where(noise_set, singular, torch.zeros_like(singular)).sum(-1)
    noise = torch.where(noise_set.any(-1), noise, torch.ones_like(noise))
    ratio = torch.where(signal > 0, signal / noise, torch.zeros_like(signal))
    snr = torch.where(s_max > 0, ratio / torch.where(s_max > 0, s_max, torch.ones_like(s_max)),
                      torch.zeros_like(ratio))
    return {"snr": snr, "s_max": s_max, "signal": signal, "noise": noise, "threshold": threshold, "sigma": sigma}


def reference_snr(weight: torch.Tensor) -> float:
    """The reference computation, one matrix, float32 SVD: the yardstick for tests and benchmarks."""
    weight = weight.to(torch.float32)
    if weight.ndim < 2:
        weight = weight.unsqueeze(0)
    singular = torch.linalg.svdvals(weight)
    n, m = weight.shape[-2:]
    return float(snr_from_singular_values(singular, n, m)["snr"])
