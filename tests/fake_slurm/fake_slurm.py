#!/usr/bin/env python3
"""A fake SLURM for tests: sbatch runs the job here and now; every call is logged.

Installed as sbatch, srun, sacct, sacctmgr, sinfo and scancel (symlinks to this file); put this
directory first on PATH and set FAKE_SLURM_DIR to a writable directory. Logs (JSON lines):
  $FAKE_SLURM_DIR/sbatch.jsonl   {"jobid", "argv", "options", "returncode"} per submission
  $FAKE_SLURM_DIR/srun.jsonl     {"argv"} per job step
  $FAKE_SLURM_DIR/jobs.txt       "jobid|job-name|STATE" per finished job (what sacct reports)
Partitions (sinfo): "cpu" (the default) and "gpu"; the only account is $FAKE_SLURM_ACCOUNT (default "fake").
"""

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

STATE = Path(os.environ.get("FAKE_SLURM_DIR", "/tmp/fake_slurm"))
ACCOUNT = os.environ.get("FAKE_SLURM_ACCOUNT", "fake")


def log(name, record):
    STATE.mkdir(parents=True, exist_ok=True)
    with open(STATE / name, "a", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.write(json.dumps(record) + "\n")


def next_jobid():
    STATE.mkdir(parents=True, exist_ok=True)
    with open(STATE / "counter", "a+", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        jobid = int(handle.read().strip() or 1000) + 1
        handle.seek(0)
        handle.truncate()
        handle.write(str(jobid))
    return jobid


def parse_options(argv):
    """sbatch options as {name: value} ("--mem 4000", "--gpus=2", "-p gpu" all handled); flags get True."""
    options, i = {}, 0
    takes_value = {"-A", "-p", "-t", "-C", "-D", "--job-name", "--output", "--comment", "--mem",
                   "--mem-per-cpu", "--clusters"}
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("-") and "=" in arg:
            key, value = arg.split("=", 1)
            options[key] = value
        elif arg in takes_value and i + 1 < len(argv):
            options[arg] = argv[i + 1]
            i += 1
        elif arg.startswith("-"):
            options[arg] = True
        i += 1
    return options


def sbatch(argv):
    options = parse_options(argv)
    jobid = next_jobid()
    script = options.get("--wrap") or sys.stdin.read()
    logfile = Path(str(options.get("--output", "slurm-%j.out")).replace("%j", str(jobid)))
    logfile.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, SLURM_JOB_ID=str(jobid), SLURM_JOBID=str(jobid))
    if options.get("--gpus"):
        env["SLURM_GPUS"] = str(options["--gpus"])
    with open(logfile, "w", encoding="utf-8") as out:
        code = subprocess.run(["sh", "-c", script], cwd=options.get("-D"), env=env, stdout=out,
                              stderr=subprocess.STDOUT).returncode
    log("sbatch.jsonl", {"jobid": jobid, "argv": argv, "options": options, "returncode": code})
    with open(STATE / "jobs.txt", "a", encoding="utf-8") as handle:
        handle.write(f"{jobid}|{options.get('--job-name')}|{'COMPLETED' if code == 0 else 'FAILED'}\n")
    print(jobid if "--parsable" in argv else f"Submitted batch job {jobid}")
    return 0


def srun(argv):
    log("srun.jsonl", {"argv": argv})
    command = list(argv)
    while command and command[0].startswith("-"):
        command.pop(0)
    os.execvp(command[0], command)


def sacct(argv):
    if "--name" in argv:  # the executor's status query: JobIdRaw|State of this run's jobs
        name = argv[argv.index("--name") + 1]
        jobs = (STATE / "jobs.txt").read_text().splitlines() if (STATE / "jobs.txt").exists() else []
        for line in jobs:
            jobid, job_name, state = line.split("|")
            if job_name == name:
                print(f"{jobid}|{state}")
    elif any("Account" in a for a in argv):  # guessing the account from recent jobs
        print(ACCOUNT)
    return 0


def main():
    command, argv = Path(sys.argv[0]).name, sys.argv[1:]
    if command == "sbatch":
        return sbatch(argv)
    if command == "srun":
        return srun(argv)
    if command == "sacct":
        return sacct(argv)
    if command == "sacctmgr":
        print(ACCOUNT)
        return 0
    if command == "sinfo":
        print("PARTITION\ncpu*\ngpu")
        return 0
    if command == "scancel":
        log("scancel.jsonl", {"argv": argv})
        return 0
    print(f"fake_slurm: unknown command {command}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
