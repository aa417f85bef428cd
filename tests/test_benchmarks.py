"""The benchmark scripts still run against the package as it is now, on a tiny model, and print the table a
reader takes the figures from (the figures themselves come from real runs; see docs/training.md)."""

from __future__ import annotations

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


@pytest.mark.slow
def test_the_training_benchmark_trains_each_method_and_its_bare_loop(tiny_llama, tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "train.py"), "--model-dir", str(tiny_llama),
           "--methods", "full,spectrum", "--steps", "3", "--batch", "2", "--seq-len", "64", "--work", str(tmp_path)]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = table_rows(result.stdout)
    assert list(rows) == ["full", "spectrum", "bare-full", "bare-spectrum"], result.stdout
    selected = yaml.safe_load((tmp_path / "sel.yaml").read_text())["trainable_params"]
    assert int(rows["spectrum"][0].replace(",", "")) == int(rows["bare-spectrum"][0].replace(",", "")) == selected
    assert rows["full"][5:7] == ["1.00", "1.00"] and rows["bare-full"][5:7] == ["1.00", "1.00"]
    for method in ("full", "spectrum"):  # the trainer's step and token ratios to its own bare loop
        assert len(rows[method]) == 9 and all(float(x) > 0 for x in rows[method][7:9])
