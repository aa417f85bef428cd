"""The embedded default DAG end to end: `snakemake --cores 2` in a clean directory, timed per rule group.

Runs the repository's Snakefile with config/config.yaml in a fresh working directory (so nothing is reused from
an earlier run), then reads the benchmark .tsv file every rule writes (results/**/benchmarks/) and prints, per
rule group (fetch, scan, select, train, merge, eval, report): the jobs, their summed wall and CPU seconds, the
longest job and the peak RSS; then the DAG's own wall time (start to finish of snakemake), the CPU time of all
jobs and how busy the cores were on average (CPU / (wall × cores)).

    python benchmarks/default_dag.py                          # the default, in a temporary directory
    python benchmarks/default_dag.py --work /tmp/dag --keep   # keep the results (report: /tmp/dag/results/report)
    python benchmarks/default_dag.py --smoke                  # a minutes-long check of this script: 2 methods,
                                                              # 2 training steps, 4 examples per task
    python benchmarks/default_dag.py -- --set-threads train=2 # extra snakemake arguments after --

Run it on a quiet machine: the figures are this machine's, and other work on it makes them meaningless
(the load average before and after is printed).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "config" / "config.yaml"
# The smoke run: the default config, smaller (what is left out or cut is said in its help)
SMOKE = {"methods": ["spectrum", "lora"], "top_percent": [25], "criteria": ["snr"], "max_steps": 2, "limit": 4}


@dataclass
class Group:
    jobs: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    longest_s: float = 0.0
    max_rss_mb: float = 0.0
    files: list[str] = field(default_factory=list)


def group_of(path: Path, results: Path) -> str:
    """The rule group of a benchmark file: results/M/benchmarks/train/R.tsv → train, …/fetch.tsv → fetch."""
    parts = path.relative_to(results).parts
    after = parts[parts.index("benchmarks") + 1:]
    return after[0][: -len(".tsv")] if len(after) == 1 else after[0]


def number(value: str, path: Path, column: str) -> float:
    try:
        return float(value) if value not in ("", "NA", "-") else 0.0
    except ValueError:
        raise SystemExit(f"{path}: column {column!r} is {value!r}, expected a number") from None


def read_groups(results: Path) -> dict[str, Group]:
    """Every benchmark .tsv under ``results`` (Snakemake's columns s, max_rss, cpu_time; one row per run of the
    job, the last one counted), summed per rule group."""
    groups: dict[str, Group] = {}
    for path in sorted(results.rglob("benchmarks/**/*.tsv")):
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        if not rows or not {"s", "cpu_time", "max_rss"} <= set(rows[-1]):
            raise SystemExit(f"{path}: expected a Snakemake benchmark file (columns s, max_rss, cpu_time)")
        row = rows[-1]
        wall, cpu = number(row["s"], path, "s"), number(row["cpu_time"], path, "cpu_time")
        group = groups.setdefault(group_of(path, results), Group())
        group.jobs += 1
        group.wall_s += wall
        group.cpu_s += cpu
        group.longest_s = max(group.longest_s, wall)
        group.max_rss_mb = max(group.max_rss_mb, number(row["max_rss"], path, "max_rss"))
        group.files.append(str(path.relative_to(results)))
    return groups


def minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:04.1f} s"


def table(groups: dict[str, Group], dag_wall_s: float | None, cores: int) -> str:
    """The per-group table and the totals (the DAG's wall time when known)."""
    order = ["fetch", "scan", "select", "train", "sweep", "merge", "eval", "report"]
    names = sorted(groups, key=lambda g: (order.index(g) if g in order else len(order), g))
    lines = [f"{'group':<8} {'jobs':>4} {'wall s':>9} {'CPU s':>9} {'CPU/wall':>8} {'longest s':>9} {'peak RSS MB':>11}"]
    for name in names:
        g = groups[name]
        ratio = g.cpu_s / g.wall_s if g.wall_s else 0.0
        lines.append(f"{name:<8} {g.jobs:>4} {g.wall_s:>9.1f} {g.cpu_s:>9.1f} {ratio:>8.2f} {g.longest_s:>9.1f} "
                     f"{g.max_rss_mb:>11.0f}")
    jobs = sum(g.jobs for g in groups.values())
    wall, cpu = sum(g.wall_s for g in groups.values()), sum(g.cpu_s for g in groups.values())
    lines.append(f"{'all':<8} {jobs:>4} {wall:>9.1f} {cpu:>9.1f} {cpu / wall if wall else 0:>8.2f}")
    if dag_wall_s is not None:
        lines.append(f"DAG wall {minutes(dag_wall_s)} ({dag_wall_s:.0f} s) on {cores} cores; job CPU {minutes(cpu)}; "
                     f"cores busy {cpu / (dag_wall_s * cores):.0%} on average; job wall summed / DAG wall "
                     f"{wall / dag_wall_s:.2f} (jobs at once, on average)")
    return "\n".join(lines)


def smoke_config(path: Path) -> Path:
    """The default config, cut down for a quick end-to-end check (SMOKE)."""
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    config.update(methods=SMOKE["methods"], top_percent=SMOKE["top_percent"])
    config["selection"] = {"criteria": SMOKE["criteria"]}
    config["train"]["max_steps"] = SMOKE["max_steps"]
    config["train"]["method_settings"] = {m: s for m, s in config["train"]["method_settings"].items()
                                          if m in SMOKE["methods"]}
    config["evaluate"]["limit"] = SMOKE["limit"]
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def commit() -> str:
    out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return (out.stdout.strip() or "unknown") + (" (uncommitted changes)" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", help="the working directory (default: a new temporary one); must be empty")
    parser.add_argument("--keep", action="store_true", help="keep the temporary working directory")
    parser.add_argument("--cores", type=int, default=2, help="snakemake --cores (default 2)")
    parser.add_argument("--smoke", action="store_true",
                        help=f"a quick check: methods {', '.join(SMOKE['methods'])} at t={SMOKE['top_percent'][0]}, "
                             f"no control, {SMOKE['max_steps']} training steps, {SMOKE['limit']} examples per task")
    parser.add_argument("--tables-only", metavar="RESULTS",
                        help="print the table of an existing results directory; run nothing")
    parser.add_argument("snakemake_args", nargs="*", help="extra snakemake arguments (after --)")
    args = parser.parse_args()
    if args.tables_only:
        print(table(read_groups(Path(args.tables_only)), None, args.cores))
        return
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="snrtune-dag-"))
    work.mkdir(parents=True, exist_ok=True)
    if any(work.iterdir()):
        raise SystemExit(f"--work {work} is not empty; expected a clean directory (nothing reused)")
    config = smoke_config(work / "smoke.yaml") if args.smoke else DEFAULT_CONFIG
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile"), "--configfile", str(config),
           "--directory", str(work), "--cores", str(args.cores), *args.snakemake_args]
    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, commit {commit()}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f} before; {'smoke run' if args.smoke else 'the embedded default'} in {work}",
          flush=True)
    print(" ".join(cmd), flush=True)
    start = time.perf_counter()
    with open(work / "snakemake.log", "w") as log:
        proc = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    dag_wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"snakemake failed (exit {proc.returncode}) after {dag_wall:.0f} s; see {log.name} "
                         f"and {work}/logs")
    print(table(read_groups(work / "results"), dag_wall, args.cores))
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if not args.work and not args.keep:
        shutil.rmtree(work)
    else:
        print(f"results: {work / 'results'}")


if __name__ == "__main__":
    main()
