"""What a run cost, as the report tables and plots show it: GPU-hours (CPU-hours without a GPU) and peak memory.

Light (pandas only), so both the report's tables and snrtune.report.plots read it without importing each other.
"""

from __future__ import annotations

import pandas as pd

COST_COLUMNS = ["trainable_params", "peak_memory_bytes", "train_wall_time_s", "tokens_per_s", "gpu_seconds",
                "cpu_seconds", "peak_allocated_bytes", "peak_reserved_bytes"]


def compute_hours(cost: pd.DataFrame) -> tuple[pd.Series, str]:
    """GPU-hours (GPUs × training seconds over all attempts) when any run used a GPU, else CPU-hours."""
    gpu = cost["gpu_seconds"] if "gpu_seconds" in cost else pd.Series(index=cost.index, dtype=float)
    if (gpu.fillna(0) > 0).any():
        return gpu / 3600, "GPU-hours"
    cpu = cost["cpu_seconds"] if "cpu_seconds" in cost else pd.Series(index=cost.index, dtype=float)
    return cpu / 3600, "CPU-hours (no GPU)"


def peak_memory(cost: pd.DataFrame) -> tuple[pd.Series, str]:
    """Peak allocated accelerator memory when recorded, else the peak memory of the run (RSS on a CPU)."""
    allocated = cost["peak_allocated_bytes"] if "peak_allocated_bytes" in cost else None
    if allocated is not None and allocated.notna().any():
        return allocated, "peak allocated GPU memory"
    return cost["peak_memory_bytes"], "peak memory (RSS on a CPU)"


# A run's training status (metrics.json): "diverged" (a non-finite loss, or `"status": "diverged"`) and
# "did not learn" are failures — shown, never ranked; "learned" and None (too few losses to tell) are not.
FAILED = ("diverged", "did not learn")
