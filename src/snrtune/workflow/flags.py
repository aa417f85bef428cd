"""Command-line flags of the rules' `snrtune` commands, built from the config (one place per command's flags)."""

from __future__ import annotations
import shlex
from pathlib import Path
from typing import Any
from snrtune import hub
from snrtune.workflow.plan import STRATEGY_FILES, benchmarked_runs, candidate_rate, job_assignments, train_command


def lm_eval_options(evaluate: dict) -> dict[str, Any]:
    """The evaluate: section's prompt and generation options as `snrtune evaluate` keyword flags (for flags())."""
    multiturn = evaluate["fewshot_as_multiturn"]
    return {"fewshot_as_multiturn": multiturn is True, "no_fewshot_as_multiturn": multiturn is False,
            "system_instruction": evaluate["system_instruction"], "max_batch_size": evaluate["max_batch_size"],
            "gen_kwargs": model_args_flag(evaluate["gen_kwargs"])}


def report_flags(config: dict) -> str:
    """``--target-task X --retention-tasks A,B --margin D`` (or ``--margin-of-gain F``) of `snrtune report`, from the
    config's report section."""
    report = config["report"]
    return flags(target_task=report["target_task"], retention_tasks=report["retention_tasks"],
                 margin=report["margin"], margin_of_gain=report["margin_of_gain"])


def set_flags(values: dict[str, Any]) -> str:
    """``--set KEY=VALUE`` flags of typed setting values (a whole float written as an integer: 32.0 -> 32)."""
    def text(value):
        return str(int(value)) if isinstance(value, float) and value.is_integer() and abs(value) < 1e15 else str(value)

    return " ".join(f"--set {shlex.quote(f'{key}={text(value)}')}" for key, value in values.items())


def settings_flags(config: dict, method: str, lr: float | None = None) -> str:
    """``--set KEY=VALUE`` flags of a method's own settings (and its learning rate: a candidate's, or the one
    candidate listed), on top of the shared training config that holds what must stay equal."""
    return set_flags(job_assignments(config, method, lr))


def train_flags(config: dict, model: str, run: str, lr: str | None = None) -> str:
    """The flags of `snrtune train` for ``run`` on ``model`` (``lr``: a sweep candidate's directory name) from the
    run's TrainCommand (snrtune.workflow.plan.train_command): the options the pre-flight check built its settings
    from."""
    rate = candidate_rate(config, run, lr) if lr is not None else None
    job = train_command(config, model, run, rate)
    own = flags(method=job.method, seed=job.seed, selection=job.selection, stage=job.stage, max_steps=job.max_steps,
                match_params_of=job.match_params_of,
                resume=True,  # a requeued job continues from its last checkpoint
                allow_diverged=True)  # a diverged run is a result the report shows (docs/checks.md)
    parts = [own, " ".join(f"--config {shlex.quote(path)}" for path in job.config_files),
             set_flags(job.assignments)]
    return " ".join(part for part in parts if part)


def flags(**options: Any) -> str:
    """Command-line flags from keyword options: None/False/'' are left out, True is a bare flag.

    flags(top_percent=25, compat=None, allow_pickle=True) -> '--top-percent 25 --allow-pickle'
    """
    out = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is None or value is False or value == "" or value == []:
            continue
        if value is True:
            out.append(flag)
        else:
            if isinstance(value, (list, tuple)):
                value = ",".join(str(v) for v in value)
            out += [flag, shlex.quote(str(value))]
    return " ".join(out)


def launcher(n_gpus: int) -> str:
    """How a training job starts: ``snrtune`` (one process), or one process per GPU with torchrun."""
    if n_gpus > 1:
        return f"torchrun --standalone --nproc_per_node {n_gpus} -m snrtune.cli"
    return "snrtune"


def model_args_flag(model_args: dict) -> str | None:
    """models.NAME.eval_model_args (or evaluate.gen_kwargs) as the JSON object `snrtune evaluate --model-args`
    (--gen-kwargs) takes (None when empty)."""
    import json

    return json.dumps(model_args, sort_keys=True, separators=(",", ":")) if model_args else None


def num_fewshot(tasks: list[dict]) -> str | None:
    """'arc_challenge=25,hellaswag=10' from the tasks that set num_fewshot (None if none does)."""
    pairs = [f"{t['name']}={t['num_fewshot']}" for t in tasks if t.get("num_fewshot") is not None]
    return ",".join(pairs) or None


def limit_flag(limit: float | dict | None) -> str | None:
    """evaluate.limit as `snrtune evaluate --limit` takes it: '40', or 'snrtune_toolcall=40,mmlu=0.1' from a
    mapping (its null entries left out: those tasks are evaluated in full, as are tasks it does not name)."""
    if isinstance(limit, dict):
        return ",".join(f"{task}={n:g}" for task, n in limit.items() if n is not None) or None
    return None if limit is None else f"{limit:g}"


def scaled(value: int, attempt: int, growth: float, ceiling: int | None = None) -> int:
    """A memory or runtime request for a retry: value × growth^(attempt-1), at most ``ceiling`` (the
    partition's limit, ``resources.max_mem_mb``/``max_runtime``; a training job cut at the time limit resumes
    from its last checkpoint on the retry)."""
    request = int(round(value * growth ** (attempt - 1)))
    return request if ceiling is None else min(request, ceiling)


def job_env(config: dict, offline: bool) -> str:
    """The shell prefix of a step: HF_HOME from ``hub.hf_home`` and, for every step but the downloads on the
    login node, the offline switches (``export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1; ``)."""
    env = {"HF_HOME": config["hub"]["hf_home"]} if config["hub"]["hf_home"] else {}
    env.update(hub.OFFLINE_ENV if offline else {})
    if not env:
        return ""
    return "export " + " ".join(f"{k}={shlex.quote(str(v))}" for k, v in env.items()) + "; "


def sharding_flags(strategy: str, workflow_dir: str | Path) -> str:
    """``--deepspeed config/zero*.json`` for a sharded training run (ZeRO-3, optionally offloaded, or ZeRO-2
    when the config asks for it), else ''."""
    if strategy not in STRATEGY_FILES:
        return ""
    return "--deepspeed " + shlex.quote(str(Path(workflow_dir) / STRATEGY_FILES[strategy]))


def benchmark_flags(config: dict, paths: list[str]) -> str:
    """``--benchmark MODEL/RUN=TSV`` per training benchmark (paths in report_inputs order, as the rule got them)."""
    ids = [f"{m}/{r}" for m, r in benchmarked_runs(config)]
    return " ".join(f"--benchmark {shlex.quote(f'{i}={p}')}" for i, p in zip(ids, paths))
