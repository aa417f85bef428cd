"""The benchmark scripts still run against the package as it is now, on a tiny model, and print the table a
reader takes the figures from (the figures themselves come from real runs; see docs/training.md)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def table_rows(stdout: str) -> dict[str, list[str]]:
    """The benchmark's table: method → its columns after the method name."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("method "))
    rows = {}
    for line in lines[start + 1:]:
        cells = line.split()
        if not cells or not re.fullmatch(r"[\d,]+", cells[1] if len(cells) > 1 else ""):
            break
        rows[cells[0]] = cells[1:]
    return rows


def summary_rows(stdout: str) -> dict[str, str]:
    """benchmarks/gpu_check.sh's closing table: check → result."""
    lines = stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("check "))
    width = lines[start].index("result")
    return {line[:width].strip(): line[width:].strip() for line in lines[start + 1:] if line.strip()}


@pytest.mark.slow
def test_the_gpu_check_smoke_mode_runs_every_stage_on_the_cpu(tmp_path):
    """`bash benchmarks/gpu_check.sh --device cpu`: the scan against svdvals, benchmarks/train.py with changing
    and with fixed batch shapes (each method and its bare loop), ZeRO-3 through `snrtune train` where deepspeed is
    importable, and the table a reader copies into docs/training.md (about 3 minutes on 2 idle cores)."""
    import importlib.util

    result = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--device", "cpu", "--work",
                             str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = summary_rows(result.stdout)
    scan = re.fullmatch(r"speed-up [\d.]+x, max SNR difference (\S+) \(relative (\S+)\)",
                        summary["scan vs float32 svdvals (cpu)"])
    assert scan and float(scan.group(2)) < 1e-4, summary
    for shape in ("variable", "fixed"):
        for method in ("full", "spectrum"):
            assert re.fullmatch(r"median step [\d.]+ s vs [\d.]+ s: [\d.]+x the bare loop \(slowest trainer step "
                                r"[\d.]+ s\)", summary[f"trainer vs bare, {method}, {shape} shapes"]), summary
    assert summary["snrtune train, fsdp, full"] == "skipped (accelerate applies FSDP on GPUs only)"
    selected = yaml.safe_load((tmp_path / "sharded" / "sel.yaml").read_text())["trainable_params"]
    if importlib.util.find_spec("deepspeed") is not None:  # CI installs it (scripts/install.sh)
        full = re.search(r"^ok in \d+ s; ([\d,]+) of ([\d,]+) trainable", summary["snrtune train, zero3, full"])
        assert full and full.group(1) == full.group(2) != "0", summary
        spectrum = re.search(r"^ok in \d+ s; ([\d,]+) of ([\d,]+) trainable \(selection: ([\d,]+)\)",
                             summary["snrtune train, zero3, spectrum"])
        assert spectrum and spectrum.group(1) == spectrum.group(3) == f"{selected:,}" and \
            spectrum.group(2) == full.group(2), summary
    # benchmarks/train.py's own table (fixed shapes: every batch padded to --seq-len)
    log = (tmp_path / "train-fixed.log").read_text()
    assert "trainer batches padded to: max, bare rows: fixed" in log
    rows = table_rows(log)
    assert list(rows) == ["full", "spectrum", "bare-full", "bare-spectrum"], log
    selected = yaml.safe_load((tmp_path / "fixed" / "sel.yaml").read_text())["trainable_params"]
    assert int(rows["spectrum"][0].replace(",", "")) == int(rows["bare-spectrum"][0].replace(",", "")) == selected
    assert rows["full"][5:7] == ["1.00", "1.00"] and rows["bare-full"][5:7] == ["1.00", "1.00"]
    for method in ("full", "spectrum"):  # the trainer's step and token ratios to its own bare loop
        assert len(rows[method]) == 9 and all(float(x) > 0 for x in rows[method][7:9])
    steps = log.split("seconds of each step (step 1 first):")[1].split()
    assert steps[:4] == ["full"] + steps[1:4] and len(steps) == 4 * 4  # 4 rows: a name and 3 steps each
    # the trainer's per-step seconds in metrics.json, which that block prints
    metrics = json.loads((tmp_path / "fixed" / "runs" / "full" / "metrics.json").read_text())
    assert [f"{s:.3f}" for s in metrics["details"]["step_seconds"]] == steps[1:4]
