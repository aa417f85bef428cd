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

import contextlib
import math
from concurrent.futures import ThreadPoolExecutor

import threadpoolctl
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
    """Eigenvalues (ascending) of a batch of symmetric matrices (..., n, n) (``per_thread``)."""
    return per_thread(torch.linalg.eigvalsh, gram)


@contextlib.contextmanager
def one_thread():
    """torch on one thread inside the block: for many small element-wise operations, which on a busy machine
    spend far more time spin-waiting for their threads than computing (the α fits: 5× the CPU time on 2)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def per_thread(function, batch: torch.Tensor) -> torch.Tensor:
    """``function`` (LAPACK or BLAS on a batch of matrices (..., n, m)) with the batch split over one thread per
    core, each running its library single-threaded: for the few-hundred-wide matrices of small models this is
    about 1.5× faster than one multi-threaded call, and nothing spin-waits on a busy machine."""
    workers = torch.get_num_threads()
    flat = batch.reshape(-1, *batch.shape[-2:])
    if batch.device.type != "cpu":
        return function(batch)
    parts = flat.chunk(min(workers, flat.shape[0]))
    torch.set_num_threads(1)
    try:
        with threadpoolctl.threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(len(parts)) as pool:
            values = list(pool.map(function, parts))
    finally:
        torch.set_num_threads(workers)
    values = torch.cat(values)
    return values.reshape(*batch.shape[:-2], *values.shape[1:])


def gram_matrix(weights: torch.Tensor, row_chunk: int = 2048, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The smaller Gram matrix of each matrix of a batch (..., n, m), accumulated in ``dtype`` chunk by chunk
    so memory stays near one matrix. On the CPU each comes from BLAS ``syrk`` (half the work of a matrix
    product: the float64 Gram costs about what a float32 product does), one matrix per core."""
    if weights.shape[-2] < weights.shape[-1]:
        weights = weights.transpose(-1, -2)
    rows, cols = weights.shape[-2], weights.shape[-1]
    if weights.device.type == "cpu" and dtype in SYRK:
        return per_thread(lambda part: _syrk_gram(part, row_chunk, dtype), weights)
    gram = torch.zeros(*weights.shape[:-2], cols, cols, dtype=dtype, device=weights.device)
    for start in range(0, rows, row_chunk):
        chunk = weights[..., start:start + row_chunk, :].to(dtype)
        gram += chunk.transpose(-1, -2) @ chunk
    return gram


SYRK = {torch.float64: "dsyrk", torch.float32: "ssyrk"}


def _syrk_gram(weights: torch.Tensor, row_chunk: int, dtype: torch.dtype) -> torch.Tensor:
    """AᵀA of each matrix A of a batch (B, rows, cols) on the CPU: scipy's BLAS ``syrk`` over row chunks (its upper
    triangle), mirrored into a full matrix."""
    from scipy.linalg import blas

    syrk = getattr(blas, SYRK[dtype])
    rows, cols = weights.shape[-2:]
    out = torch.empty(weights.shape[0], cols, cols, dtype=dtype)
    for index in range(weights.shape[0]):
        upper = None
        for start in range(0, rows, row_chunk):
            # Aᵀ is a Fortran-ordered array of the chunk (no copy inside the wrapper); trans=0 adds (Aᵀ)(Aᵀ)ᵀ
            chunk = weights[index, start:start + row_chunk].to(dtype).numpy().T
            upper = syrk(1.0, chunk, trans=0) if upper is None else syrk(1.0, chunk, beta=1.0, c=upper, trans=0,
                                                                          overwrite_c=1)
        gram = torch.from_numpy(upper)
        out[index] = gram.triu() + gram.triu(1).transpose(0, 1)
    return out


def gram_singular_values(weights: torch.Tensor, row_chunk: int = 2048,
                         dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Singular values (descending) of a batch of matrices (..., n, m) from the eigenvalues of the
    smaller Gram matrix, computed in ``dtype``."""
    return eigvalsh(gram_matrix(weights, row_chunk, dtype)).clamp_min(0).sqrt().flip(-1)


def gram_moves(singular: torch.Tensor, n: int, m: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(moved, rounding) of singular values (..., k) from Gram eigenvalues computed with rounding ``eps``: the
    estimated move of each value and which values are mostly rounding.

    Rounding moves each eigenvalue by about delta = sqrt(max(n, m))·eps·S_max², so a singular value s moves by
    about delta / (s + sqrt(delta)); values below 2·sqrt(delta) are mostly rounding, lifted by the clamp at zero.
    """
    delta = math.sqrt(max(n, m)) * eps * singular[..., :1] ** 2
    root = delta.sqrt()
    return torch.where(delta > 0, delta / (singular + root), 0.0), singular < 2 * root  # a zero matrix: exact


def snr_error(singular: torch.Tensor, n: int, m: int, moved: torch.Tensor, rounding: torch.Tensor) -> torch.Tensor:
    """Estimated relative error of the SNR of n×m matrices whose singular values move by ``moved`` (``gram_moves``).

    Values that are not mostly rounding move at random and their errors add in quadrature; the rounding ones'
    moves add up. Each sum (signal, noise) is judged against itself, and S_max's own move counts too. A value
    that lies within its move (plus the threshold's) of the threshold may change sides, which moves both sums by
    a whole value: that counts in full.
    """
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
    # (a quartile lies between two neighbouring values, descending: it moves at most as the more moved of them)
    last = singular.shape[-1] - 1
    quartiles_moved = sum(torch.maximum(moved[..., math.floor((1 - q) * last)], moved[..., math.ceil((1 - q) * last)])
                          for q in (0.25, 0.75))
    threshold_moved = (quartiles_moved * (1 + math.sqrt(min(n, m) / max(n, m))) / IQR_TO_SIGMA).unsqueeze(-1)
    side_change = (singular - threshold).abs() <= moved + threshold_moved
    flips = torch.where(side_change, singular, zero).sum(-1)
    return error + torch.where(flips > 0, flips * (1 / torch.minimum(noise_sum, parts["noise"]) + 1 / signal), 0.0)


TOLERANCE = 1e-4  # every score of a matrix is computed to this relative error of the exact one
TIERS = ("float64", "float64 svd")  # a matrix's ``computed_in``


def spectral_errors(singular: torch.Tensor, n: int, m: int, criteria, moves) -> dict[str, torch.Tensor]:
    """{criterion name: estimated relative error of its score} under the move model ``moves`` (a pair from
    ``gram_moves``); a criterion without an error estimate counts as unresolved (inf): it takes the SVD."""
    moved, rounding = moves
    errors = {}
    with one_thread():
        for criterion in criteria:
            estimate = criterion.function("error")
            errors[criterion.name] = (estimate(singular, n, m, moved, rounding) if estimate is not None
                                      else torch.full(singular.shape[:-1], math.inf, dtype=singular.dtype))
    return errors


def _over(errors: dict[str, torch.Tensor], tolerance: float) -> torch.Tensor:
    """Matrices with any estimate above ``tolerance`` (NaN counts as above)."""
    flags = [~(error <= tolerance) for error in errors.values()]
    return torch.stack(flags).any(0) if flags else torch.zeros(0, dtype=torch.bool)


def exact_singular_values(weights: torch.Tensor, criteria, tolerance: float = TOLERANCE
                          ) -> tuple[torch.Tensor, list[str]]:
    """(singular values float64, computed_in per matrix) of a batch, each within what every criterion's score
    needs to be within ``tolerance`` of the exact one (docs/snr.md, "Precision"): float64 Gram eigenvalues, redone
    by a float64 SVD (``torch.linalg.svdvals``, the reference computation) for the matrices where some criterion's
    estimate (``criterion.error`` under ``gram_moves`` at float64 rounding) exceeds ``tolerance``.

    (Float32 Gram eigenvalues would do for the SNR of two matrices in three, but κ needs σ_min, which they resolve
    only for κ ≲ 5: on SmolLM2 6 of 211 matrices would pass every estimate in float32.)
    """
    n, m = weights.shape[-2:]
    singular = gram_singular_values(weights, dtype=torch.float64)
    moves = gram_moves(singular, n, m, torch.finfo(torch.float64).eps)
    svd = torch.nonzero(_over(spectral_errors(singular, n, m, criteria, moves), tolerance)).flatten()
    if len(svd):
        singular[svd] = per_thread(torch.linalg.svdvals, weights[svd].double())
    return singular, [TIERS[1] if i in set(svd.tolist()) else TIERS[0] for i in range(weights.shape[0])]


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
