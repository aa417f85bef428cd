"""The workflow on a real SLURM scheduler (scripts/slurm-ci.sh: Slurm 22.05, slurmdbd accounting, two GRES GPUs),
through `snakemake --profile` with the shipped profile (its EDIT lines filled in) and the real SLURM plugin.

One run of a tiny LoRA comparison, during which the training job is killed for memory (a tiny train_mem_mb) and
retried with more, then requeued with `scontrol requeue` once it has written a checkpoint. The checks read the
scheduler's own records (sacct, scontrol) and the files a user reads. Needs root and apt-get (the script
installs Debian's packages); skipped without them unless CI is set, where it must run.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from workflow_project import SNAKEFILE, VENV_BIN, tiny_project

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "slurm-ci.sh"
RUN = "lora-s0"
STEPS, SAVE_STEPS = 60, 5
TRAIN_MEM_MB, GROWTH, MAX_MEM_MB, MAX_RUNTIME = 150, 60, 8000, 30  # attempt 2 asks min(150·60, 8000) MB
LOCALRULES = {"all", "fetch", "prefetch_data", "prefetch_tasks", "select", "select_control", "pick", "report"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        if os.environ.get("CI"):
            pytest.fail("the real-SLURM test needs root and apt-get in CI")
        pytest.skip("needs root and apt-get (scripts/slurm-ci.sh installs and starts SLURM)")
    state = tmp_path_factory.mktemp("slurm")
    started = time.monotonic()
    subprocess.run(["bash", str(SCRIPT), "start", str(state)], check=True, timeout=900)
    print(f"slurm-ci.sh start: {time.monotonic() - started:.1f} s")
    env = {"SLURM_CONF": str(state / "etc/slurm.conf")}
    try:
        yield env
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(state)], timeout=120)


def slurm(*args, env) -> str:
    return subprocess.run(list(args), env={**os.environ, **env}, text=True, capture_output=True, check=True,
                          timeout=60).stdout


def site_profile(directory: Path) -> Path:
    """profiles/slurm/config.yaml with its EDIT lines filled in for this cluster (account and partitions)."""
    profile = yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())
    profile["default-resources"].update(slurm_account="ci", slurm_partition="ci")
    profile["set-resources"] = {rule: {"slurm_partition": "ci"} for rule in ("scan", "train", "evaluate")}
    directory.mkdir(parents=True)
    (directory / "config.yaml").write_text(yaml.safe_dump(profile))
    return directory


def train_job(env) -> str | None:
    """The SLURM job id of the running training job (its comment names the rule)."""
    for line in slurm("squeue", "-h", "-t", "RUNNING", "-o", "%i %k", env=env).splitlines():
        job, _, comment = line.partition(" ")
        if comment.startswith("rule_train"):
            return job
    return None


def training_process_env(workdir: Path) -> dict[str, str] | None:
    """The environment of the running `snrtune train` process of this run (SLURM runs it on this machine)."""
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if b"train" in argv and any(a.endswith(f"runs/{RUN}".encode()) for a in argv) \
                    and Path(os.readlink(proc / "cwd")) == workdir:
                pairs = (proc / "environ").read_bytes().split(b"\0")
                return dict(p.decode().split("=", 1) for p in pairs if b"=" in p)
        except (OSError, ValueError):
            continue
    return None


def requeue_at_first_checkpoint(proc: subprocess.Popen, workdir: Path, env) -> dict:
    """Wait for the training job's first complete checkpoint, then requeue the job and start it again at once
    (SLURM would hold it ~2 min). Returns what the job saw and which job it was."""
    checkpoint = workdir / f"results/tiny/runs/{RUN}.partial/checkpoints/checkpoint-{SAVE_STEPS}/trainer_state.json"
    seen = {}
    deadline = time.monotonic() + 900
    while not checkpoint.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the workflow ended before a checkpoint"
        if "env" not in seen:
            job_env = training_process_env(workdir)
            if job_env and "SLURM_JOB_ID" in job_env:
                seen["env"] = job_env
        time.sleep(0.2)
    job = train_job(env)
    assert job is not None, "the training job was not running at its first checkpoint"
    seen["job"] = job
    seen["gres"] = slurm("scontrol", "-d", "show", "job", job, env=env)
    slurm("scontrol", "requeue", job, env=env)
    while slurm("squeue", "-h", "-j", job, "-o", "%T", env=env).strip() != "PENDING":
        assert time.monotonic() < deadline, f"job {job} did not return to PENDING after scontrol requeue"
        time.sleep(0.2)
    slurm("scontrol", "update", f"jobid={job}", "StartTime=now", env=env)
    return seen


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory, tiny_llama):
    root = tmp_path_factory.mktemp("slurm-work")
    workdir = root / "work"
    config = tiny_project(workdir, tiny_llama, methods=["lora"])
    spec = yaml.safe_load(config.read_text())
    spec["models"]["tiny"]["resources"].update(gpus=1, train_gpus=1, mem_mb=4000, train_mem_mb=TRAIN_MEM_MB)
    spec["resources"] = {"growth": GROWTH, "max_mem_mb": MAX_MEM_MB, "max_runtime": MAX_RUNTIME}
    config.write_text(yaml.safe_dump(spec))
    train_yaml = workdir / "train.yaml"
    train_yaml.write_text(yaml.safe_dump({**yaml.safe_load(train_yaml.read_text()), "max_steps": STEPS,
                                          "save_steps": SAVE_STEPS, "save_total_limit": 20}))
    profile = site_profile(root / "profile")
    env = {**os.environ, **cluster, "PATH": os.pathsep.join([str(VENV_BIN), os.environ["PATH"]])}
    # polling intervals on the command line (they change how soon, not what, the run reports)
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--profile", str(profile), "--configfile",
           str(config), "--slurm-init-seconds-before-status-checks", "2", "--seconds-between-status-checks", "3",
           "--latency-wait", "5"]
    started = time.monotonic()
    with open(root / "snakemake.out", "w") as out:
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
        try:
            seen = requeue_at_first_checkpoint(proc, workdir, cluster)
            proc.wait(timeout=1500)
        finally:
            if proc.poll() is None:
                proc.kill()
    log = (root / "snakemake.out").read_text()
    assert proc.returncode == 0, log[-8000:]
    print(f"snakemake --profile on SLURM: {time.monotonic() - started:.1f} s")
    fields = "JobID,Comment,State,ElapsedRaw,AllocTRES,ReqMem,Timelimit"
    rows = [dict(zip(fields.split(","), line.split("|"))) for line in
            slurm("sacct", "--duplicates", "-X", "-n", "-P", "-a", "-o", fields, env=cluster).splitlines()]
    for row in rows:
        row["rule"] = re.match(r"rule_([a-z_]+?)(_wildcards|$)", row["Comment"])[1] if row["Comment"] else None
    return {"workdir": workdir, "seen": seen, "log": log, "sacct": rows, "cluster": cluster}


def train_rows(run):
    return [r for r in run["sacct"] if r["rule"] == "train"]


@pytest.mark.slow
def test_every_job_ran_through_sbatch_and_localrules_never(slurm_run):
    rules = [r["rule"] for r in slurm_run["sacct"]]
    assert None not in rules and not LOCALRULES & set(rules)
    # merge and the two evaluations once; train: killed for memory, then requeued once and completed
    assert sorted(r for r in rules if r != "train") == ["evaluate", "evaluate", "merge"]
    assert [r["State"] for r in train_rows(slurm_run)][-1] == "COMPLETED"
    results = slurm_run["workdir"] / "results"
    assert (results / "tiny/eval/base.json").exists() and (results / f"tiny/eval/{RUN}.json").exists()
    assert (results / "report/summary.md").exists()  # the report ran on the login node, after the jobs


@pytest.mark.slow
def test_gpu_requests_reach_the_job(slurm_run):
    seen = slurm_run["seen"]
    # one of the node's two GPUs (the other may be the base evaluation's), the one SLURM allotted the job
    index = re.search(r"GRES=gpu:1\(IDX:([01])\)", seen["gres"])
    assert index, seen["gres"]
    assert seen["env"]["CUDA_VISIBLE_DEVICES"] == index[1] and seen["env"]["SLURM_JOB_ID"] == seen["job"]
    for row in slurm_run["sacct"]:  # models.tiny.resources: gpus 1 (scan, evaluate), train_gpus 1; merge none
        assert ("gres/gpu=1" in row["AllocTRES"]) == (row["rule"] != "merge"), row


@pytest.mark.slow
def test_a_job_killed_for_memory_is_retried_with_more_up_to_the_ceiling(slurm_run):
    rows = train_rows(slurm_run)
    first, last = rows[0], rows[-1]
    assert first["JobID"] != last["JobID"] and first["State"] in ("OUT_OF_MEMORY", "FAILED")
    assert first["ReqMem"] == f"{TRAIN_MEM_MB}M" and last["ReqMem"] == f"{MAX_MEM_MB}M"
    assert last["Timelimit"] == f"00:{MAX_RUNTIME}:00"
    job_log = next((slurm_run["workdir"] / ".snakemake/slurm_logs/rule_train").rglob(f"{first['JobID']}.log"))
    assert "exceeded memory limit" in job_log.read_text()


def slurm_log(run, job: str) -> str:
    return next((run["workdir"] / ".snakemake/slurm_logs/rule_train").rglob(f"{job}.log")).read_text()


@pytest.mark.slow
def test_a_requeued_training_job_resumes_and_ends_as_an_uninterrupted_run(slurm_run, tmp_path):
    workdir = slurm_run["workdir"]
    metrics = json.loads((workdir / f"results/tiny/runs/{RUN}/metrics.json").read_text())
    resumed_from = metrics["details"]["resumed_from_step"]
    assert SAVE_STEPS <= resumed_from < STEPS and resumed_from % SAVE_STEPS == 0
    assert metrics["details"]["global_step"] == STEPS
    log = (workdir / f"logs/tiny/train/{RUN}.log").read_text()
    assert f"resuming from results/tiny/runs/{RUN}.partial/checkpoints/checkpoint-{resumed_from}\n" in log
    # the job's own command, uninterrupted, outside SLURM
    line = next(line for line in slurm_log(slurm_run, slurm_run["seen"]["job"]).splitlines()
                if line.startswith("Shell command: ") and f" --out results/tiny/runs/{RUN} " in line)
    command = line.removeprefix("Shell command: ").split(" 2>&1 | tee")[0]
    command = command.replace(f" --out results/tiny/runs/{RUN} ", f" --out {shlex.quote(str(tmp_path / RUN))} ")
    subprocess.run(["bash", "-c", command], cwd=workdir, check=True, timeout=900, capture_output=True,
                   env={**os.environ, "PATH": os.pathsep.join([str(VENV_BIN), os.environ["PATH"]])})
    straight = json.loads((tmp_path / RUN / "metrics.json").read_text())
    assert straight["details"]["resumed_from_step"] == 0 and straight["attempts"] == 1
    resumed, reference = (load_file(p / "adapter_model.safetensors")
                          for p in (workdir / f"results/tiny/runs/{RUN}", tmp_path / RUN))
    assert set(resumed) == set(reference)
    for name in reference:
        torch.testing.assert_close(resumed[name], reference[name], rtol=1e-5, atol=1e-6)
    assert [loss for _, loss in metrics["train_loss"]] == pytest.approx(
        [loss for _, loss in straight["train_loss"]], rel=1e-5)


@pytest.mark.slow
def test_a_requeued_jobs_first_log_is_kept(slurm_run):
    text = slurm_log(slurm_run, slurm_run["seen"]["job"])
    # the SLURM log (--open-mode=append): the first start, its cancellation, then the second start
    first, _, second = text.partition(f"JOB {slurm_run['seen']['job']} ON ci-node CANCELLED AT")
    assert second and "Shell command: " in first and "Shell command: " in second
    # the training output of both attempts: LOG.attempts; the declared log holds the last attempt only
    log = slurm_run["workdir"] / f"logs/tiny/train/{RUN}.log"
    attempts = Path(f"{log}.attempts").read_text()
    before, _, after = attempts.partition("resuming from")
    assert f"step {SAVE_STEPS}/{STEPS} |" in before and f"step {STEPS}/{STEPS} |" in after
    assert "step 1/" not in log.read_text() and log.read_text() in attempts


@pytest.mark.slow
def test_gpu_seconds_agree_with_the_schedulers_accounting(slurm_run):
    """The run's record of its attempts against sacct's allocations of the training job (--duplicates: the
    requeued allocation and the final one): as many attempts as allocations, and each attempt's training
    seconds × its GPUs within that allocation's ElapsedRaw × gres/gpu (the scheduler also counts start-up)."""
    metrics = json.loads((slurm_run["workdir"] / f"results/tiny/runs/{RUN}/metrics.json").read_text())
    trained = [r for r in train_rows(slurm_run) if r["JobID"] == slurm_run["seen"]["job"]]
    assert [r["State"] for r in trained] == ["REQUEUED", "COMPLETED"]
    assert metrics["attempts"] == len(trained)
    billed = [int(r["ElapsedRaw"]) * int(re.search(r"gres/gpu=(\d+)", r["AllocTRES"])[1]) for r in trained]
    # CPU training: the run books processes × seconds as cpu_seconds (gpu_seconds on CUDA); 1 process here
    last = metrics["details"]["train_seconds"]
    first = metrics["cpu_seconds"] - last
    assert metrics["gpu_seconds"] == 0 and metrics["cpu_seconds"] == pytest.approx(metrics["train_seconds_total"])
    assert 0 < first <= billed[0] and 0 < last <= billed[1], (first, last, billed)
