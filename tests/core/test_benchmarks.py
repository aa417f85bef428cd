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

ROOT = Path(__file__).resolve().parents[2]


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


def test_the_dag_benchmarks_smoke_config_is_one_the_workflow_accepts(tmp_path):
    """--smoke cuts config/config.yaml down: the result passes the schema and plans spectrum and lora at t=25
    without a control (a renamed key once made it a config the workflow refused)."""
    import importlib.util

    from snrtune.workflow.plan import runs
    from snrtune.workflow.schema import load_schema, validate_config

    spec = importlib.util.spec_from_file_location("default_dag", ROOT / "benchmarks" / "default_dag.py")
    default_dag = sys.modules["default_dag"] = importlib.util.module_from_spec(spec)  # its dataclasses look it up
    spec.loader.exec_module(default_dag)
    config = validate_config(yaml.safe_load(default_dag.smoke_config(tmp_path / "smoke.yaml").read_text()),
                             load_schema(ROOT / "workflow" / "schemas" / "config.schema.yaml"))
    assert config["train"]["max_steps"] == 2 and config["evaluate"]["limit"] == 4
    assert sorted(runs(config)) == ["lora-s0", "spectrum-t25-s0"]
