"""Evaluation with one pass per shared context against lm-eval's own pass, in one run.

Runs `snrtune evaluate MODEL_DIR --tasks T --apply-chat-template --log-samples` twice, each in its own
subprocess at --threads threads: with `--no-share-context` (lm-eval's hf model, the baseline) and with
`--share-context` (snrtune.evaluation.shared_context). Prints each run's wall time and peak RSS, the ratio
shared / lm-eval, each task's scores from both, and the largest difference between the two runs' per-request
log-likelihoods (lm-eval's samples files), which should be float rounding only.

    python benchmarks/evaluate.py --model-dir results/SmolLM2-135M-Instruct/model      # the default's tasks
    python benchmarks/evaluate.py --model-dir DIR --tasks snrtune_retention --batch-size 16
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from snrtune.evaluation.results import read_samples


def evaluate(model_dir: str, tasks: str, batch_size: str, threads: int, share: bool, out: Path) -> float:
    """Wall seconds of one `snrtune evaluate` subprocess (its eval.json records its own peak memory)."""
    flag = "--share-context" if share else "--no-share-context"
    command = [sys.executable, "-m", "snrtune.cli", "evaluate", model_dir, "--tasks", tasks, "--out", str(out),
               "--apply-chat-template", "--batch-size", batch_size, "--log-samples", flag]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    with open(out.with_suffix(".log"), "w") as log:
        subprocess.run(command, check=True, env=env, stdout=log, stderr=subprocess.STDOUT)
    return time.perf_counter() - start


def loglikelihoods(samples: Path) -> dict[tuple[str, int], list[float]]:
    rows = read_samples(samples)
    return {(row.get("task", ""), row["doc_id"]): [float(r[0]) for r in row["filtered_resps"]]
            for row in rows if isinstance(row["filtered_resps"][0], list)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True, help="a fetched or merged model directory")
    parser.add_argument("--tasks", default="snrtune_toolcall,snrtune_retention,snrtune_ppl")
    parser.add_argument("--batch-size", default="4", help="as snrtune evaluate takes it (the default config's 4)")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS per run (the workflow's 1)")
    parser.add_argument("--work", help="keep eval files and logs here (default: a temporary directory)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        print(f"{args.tasks}, batch {args.batch_size}, {args.threads} thread(s); load before: "
              f"{os.getloadavg()[0]:.2f}", flush=True)
        runs = {}
        for name, share in (("lm-eval", False), ("shared", True)):
            out = work / f"{name}.json"
            wall = evaluate(args.model_dir, args.tasks, args.batch_size, args.threads, share, out)
            record = json.loads(out.read_text())
            runs[name] = (wall, record, loglikelihoods(out.with_suffix(".samples.jsonl")))
            print(f"{name:<8} {wall:7.1f} s wall, peak memory {record['peak_memory_bytes'] / 2**20:6.0f} MB",
                  flush=True)
        print(f"shared / lm-eval wall: {runs['shared'][0] / runs['lm-eval'][0]:.2f}")
        for task in runs["lm-eval"][1]["results"]:
            both = [{k: round(v, 4) for k, v in runs[n][1]["results"][task].items() if v is not None}
                    for n in ("lm-eval", "shared")]
            print(f"{task}: lm-eval {both[0]}; shared {both[1]}")
        theirs, mine = runs["lm-eval"][2], runs["shared"][2]
        diffs = [abs(a - b) for key in theirs for a, b in zip(theirs[key], mine[key])]
        print(f"largest log-likelihood difference over {len(diffs)} requests: {max(diffs, default=0):.2e}; "
              f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
