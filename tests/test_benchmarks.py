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


BENCHMARK_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def test_the_dag_benchmark_sums_wall_and_cpu_per_rule_group(tmp_path):
    """benchmarks/default_dag.py --tables-only on benchmark files laid out as the rules write them."""
    rows = {"M/benchmarks/fetch.tsv": [(57.0, 40.0, 600)],
            "M/benchmarks/train/lora-s0.tsv": [(150.0, 140.0, 3000)],
            "M/benchmarks/train/full-s0.tsv": [(90.0, 80.0, 2000), (200.0, 190.0, 3900)],  # rerun: the last row
            "M/benchmarks/eval/base.tsv": [(60.0, 58.0, 1500)],
            "benchmarks/report.tsv": [(10.0, 9.5, 400)]}
    for name, lines in rows.items():
        path = tmp_path / "results" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(BENCHMARK_HEADER + "".join(f"{s}\t0:00:00\t{rss}\t1\t1\t1\t0\t0\t50\t{cpu}\n"
                                                   for s, cpu, rss in lines))
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "default_dag.py"), "--tables-only",
                             str(tmp_path / "results")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    table = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()[1:]}
    # group: jobs, wall s, CPU s, CPU/wall, longest s, peak RSS MB
    assert table["fetch"] == ["1", "57.0", "40.0", "0.70", "57.0", "600"]
    assert table["train"] == ["2", "350.0", "330.0", "0.94", "200.0", "3900"]
    assert table["eval"][:3] == ["1", "60.0", "58.0"] and table["report"][:3] == ["1", "10.0", "9.5"]
    assert table["all"] == ["5", "477.0", "437.5", "0.92"]
    assert list(table) == ["fetch", "train", "eval", "report", "all"]


def test_the_dag_benchmark_names_a_file_that_is_not_a_benchmark(tmp_path):
    path = tmp_path / "results" / "M" / "benchmarks" / "scan.tsv"
    path.parent.mkdir(parents=True)
    path.write_text("seconds\n1\n")
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "default_dag.py"), "--tables-only",
                             str(tmp_path / "results")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and str(path) in result.stderr and "columns s, max_rss, cpu_time" in result.stderr
