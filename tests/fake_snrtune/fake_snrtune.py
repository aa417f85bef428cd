#!/usr/bin/env python3
"""A fake `snrtune` (and `torchrun`) for workflow tests: each command writes a plausible output at once.

Put this directory first on PATH and set FAKE_SNRTUNE_DIR to a writable directory. Every call appends
{"argv", "cwd", "env": {HF_HUB_OFFLINE, HF_DATASETS_OFFLINE, HF_HOME, SLURM_JOB_ID}, "nproc"} to
$FAKE_SNRTUNE_DIR/calls.jsonl. FAKE_SNRTUNE_FAIL_ONCE=COMMAND makes the first call of COMMAND fail (exit 1),
so a test sees Snakemake's retry. Outputs: fetch/merge/report make the --out directory, train makes it with a
metrics.json, scan/select/evaluate/prefetch write the --out file.
"""

import fcntl
import json
import os
import sys
from pathlib import Path

STATE = Path(os.environ.get("FAKE_SNRTUNE_DIR", "/tmp/fake_snrtune"))
ENV_KEYS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HOME", "SLURM_JOB_ID")


def log(record):
    STATE.mkdir(parents=True, exist_ok=True)
    with open(STATE / "calls.jsonl", "a", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.write(json.dumps(record) + "\n")


def fail_once(command):
    if os.environ.get("FAKE_SNRTUNE_FAIL_ONCE") != command:
        return False
    marker = STATE / f"failed-{command}"
    if marker.exists():
        return False
    marker.touch()
    return True


def snrtune(argv, nproc=None):
    command = argv[0]
    log({"argv": argv, "cwd": os.getcwd(), "env": {k: os.environ.get(k) for k in ENV_KEYS}, "nproc": nproc})
    if fail_once(command):
        print(f"fake snrtune {command}: failing once", file=sys.stderr)
        return 1
    out = Path(argv[argv.index("--out") + 1])
    if command in ("fetch", "merge", "report"):
        out.mkdir(parents=True, exist_ok=True)
        (out / "done.txt").write_text(" ".join(argv))
    elif command == "train":
        out.mkdir(parents=True, exist_ok=True)
        run = {"id": f"{out.parent.parent.name}/{out.name}", "method": argv[argv.index("--method") + 1]}
        (out / "metrics.json").write_text(json.dumps({"run": run, "train_loss": [], "trainable_params": 1}))
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"fake": command, "argv": argv}))
    return 0


def torchrun(argv):
    nproc = int(argv[argv.index("--nproc_per_node") + 1])
    rest = argv[argv.index("-m") + 2:]  # after `-m snrtune.cli`
    return snrtune(rest, nproc=nproc)


if __name__ == "__main__":
    name = Path(sys.argv[0]).name
    sys.exit(torchrun(sys.argv[1:]) if name == "torchrun" else snrtune(sys.argv[1:]))
