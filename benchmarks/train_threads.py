"""Two training jobs on 2 cores: one after the other at 2 threads each, or both at once at 1 thread each?

This is the choice of `threads:` for the `train` rule under `snakemake --cores 2`. Each job is `snrtune train`
with the embedded default's training settings (config/train-cpu.yaml, the method's own settings from
config/config.yaml) on a fetched model directory, in its own process with OMP_NUM_THREADS set as Snakemake sets
it from a rule's threads. Both layouts train the same two jobs; the ratio of their wall times says which makes
the DAG shorter (below 1: the parallel 1-thread pair is faster).

    python benchmarks/train_threads.py --model-dir results/SmolLM2-135M-Instruct/model
    python benchmarks/train_threads.py --model-dir DIR --method full --steps 12 --cores 2

Prints the wall time of each layout (and its CPU seconds), each job's wall seconds and seconds per step, and the load average before and after
(the figures mean little on a machine other work is using).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def train_command(model: str, method: str, steps: int, out: Path) -> list[str]:
    """`snrtune train` as the default's train rule runs it (the method's settings from config/config.yaml)."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    settings = config["train"].get("method_settings", {}).get(method, {})
    data = REPO / "src" / "snrtune" / "data" / "demo" / "toolcall_train.jsonl"
    sets = [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]
    return [sys.executable, "-m", "snrtune.cli", "train", model, "--data", str(data), "--out", str(out),
            "--method", method, "--seed", "0", "--config", str(REPO / "config" / "train-cpu.yaml"),
            "--max-steps", str(steps), *sets]


def run_jobs(commands: list[list[str]], threads: int, logs: list[Path]) -> tuple[float, list[float]]:
    """Start every command at once with OMP_NUM_THREADS=threads; (wall seconds of all, each job's wall)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    start = time.perf_counter()
    procs = [subprocess.Popen(cmd, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
             for cmd, log in zip(commands, logs)]
    ends = []
    for proc, log in zip(procs, logs):
        if proc.wait() != 0:
            sys.exit(f"snrtune train failed (exit {proc.returncode}); see {log}")
        ends.append(time.perf_counter() - start)
    return time.perf_counter() - start, ends


def step_seconds(out: Path) -> float:
    """Seconds per optimizer step after the first (warm-up) one, as `snrtune train` records them."""
    steady = json.loads((out / "metrics.json").read_text())["details"]["after_first_step"]
    return steady["seconds"] / steady["steps"]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True, help="a fetched model directory (results/MODEL/model)")
    parser.add_argument("--method", default="lora", help="the method both jobs train (default lora)")
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps per job (the default trains 24)")
    parser.add_argument("--cores", type=int, default=2, help="cores to share (default 2)")
    parser.add_argument("--work", help="keep runs and logs here (default: a temporary directory)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        print(f"{args.method}, {args.steps} steps per job, {args.cores} cores; load before: {os.getloadavg()[0]:.2f}")
        results = {}
        for layout in ("sequential", "parallel"):
            cpu0 = cpu_seconds()
            outs = [work / f"{layout}-{i}" for i in range(args.cores)]
            commands = [train_command(args.model_dir, args.method, args.steps, out) for out in outs]
            logs = [out.with_suffix(".log") for out in outs]
            if layout == "sequential":  # one job at a time, each with every core
                walls = [run_jobs([cmd], args.cores, [log])[0] for cmd, log in zip(commands, logs)]
                total = sum(walls)
            else:  # every job at once, one core each
                total, walls = run_jobs(commands, 1, logs)
            results[layout] = total
            threads = args.cores if layout == "sequential" else 1
            print(f"{layout:<10} {len(commands)} jobs at {threads} thread(s): {total:7.1f} s wall, "
                  f"{cpu_seconds() - cpu0:7.1f} s CPU; per job "
                  + ", ".join(f"{w:.1f}" for w in walls) + " s; s/step after the first "
                  + ", ".join(f"{step_seconds(out):.2f}" for out in outs), flush=True)
        print(f"parallel / sequential wall: {results['parallel'] / results['sequential']:.2f} "
              f"(below 1: {args.cores} one-thread jobs at once are faster); load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
