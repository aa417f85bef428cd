"""The machine-readable record every long step writes: versions, wall time, peak memory."""

from __future__ import annotations

import importlib.metadata
import platform
import resource
import sys
import time
from typing import Any

import snrtune

LIBRARIES = ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "trl", "datasets",
             "lm_eval", "safetensors", "snakemake", "pandas", "numpy")


def library_versions() -> dict[str, str | None]:
    """Versions of snrtune, Python and the libraries it drives (None where not installed)."""
    out: dict[str, str | None] = {"snrtune": snrtune.__version__, "python": platform.python_version()}
    for name in LIBRARIES:
        dist = "lm-eval" if name == "lm_eval" else name
        try:
            out[name] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def cuda_peak_bytes() -> int | None:
    """Peak CUDA memory allocated by torch in this process, or None without a GPU."""
    if "torch" not in sys.modules:
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    return int(torch.cuda.max_memory_allocated())


class Stopwatch:
    """Wall time since construction."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.start


def run_record(stopwatch: Stopwatch, **fields: Any) -> dict[str, Any]:
    """A record with versions, wall time and peak memory, plus the step's own ``fields``."""
    cuda = cuda_peak_bytes()
    return {
        **fields,
        "wall_time_s": round(stopwatch.seconds(), 3),
        "peak_rss_bytes": peak_rss_bytes(),
        "peak_cuda_bytes": cuda,
        "peak_memory_bytes": cuda if cuda is not None else peak_rss_bytes(),
        "versions": library_versions(),
    }
