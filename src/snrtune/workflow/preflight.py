"""Checks before any job runs: every training job's settings and data, the packages the jobs need, placement."""

from __future__ import annotations
from snrtune import hub
from snrtune.errors import SnrtuneError
from snrtune.naming import parse_run
from snrtune.workflow import paths
from snrtune.workflow.plan import (STRATEGY_FILES, learning_rates, runs, train_command, train_config_files,
                                  train_config_path, train_resources)


PREFLIGHT_ROWS = 1000  # rows whose content the pre-flight check reads (every row's structure is read)


def preflight(config: dict, max_rows: int | None = PREFLIGHT_ROWS, packages_here: bool = True) -> None:
    """Before any job runs: every training job's settings (the shared training file(s), each method's own
    settings and learning-rate candidates, --max-steps, the batch split over the job's planned GPUs) are built
    and checked exactly as `snrtune train` will build them, and a local training data file is checked (its
    whole structure, the content of its first ``max_rows`` rows). With ``packages_here`` (the jobs run in this
    environment, not under --sdm conda), a job that will ask for DeepSpeed finds it installed, and so do those
    that need flash-attention, bitsandbytes or vllm (check_optional_packages). Raises
    SnrtuneError with the one line `snrtune train` would print."""
    from snrtune.training import data_check
    from snrtune.training.settings_fit import check_settings_fit
    from snrtune.training.sft_data import split_validation

    check_placement(config)
    jobs = []  # (model, settings, processes) of every training job
    for model in config["models"]:
        for run in runs(config):
            processes = max(1, train_resources(config, model, run, paths.fill(paths.MODEL, model=model))["gpus"])
            jobs += [(model, train_command(config, model, run, lr).settings(processes), processes)
                     for lr in learning_rates(config, parse_run(run)["method"]) or [None]]
    if packages_here:
        require_deepspeed_for_plans(config)
        check_optional_packages(config)
    data = hub.resolve_source(config["data"]["train"])
    local = hub.data_kind(data) == "local"
    rows = None
    if local:
        for dataset_format in sorted({cfg.dataset_format for _, cfg, _ in jobs}):  # one per training file's own
            rows = data_check.check_training_data(data, dataset_format, config["train"]["stage"],
                                                  max_rows=max_rows).rows
    for model, cfg, processes in jobs:  # where the settings meet the data (the machine is the job's, not known here)
        train_rows = None if rows is None else len(split_validation(range(rows), cfg.val_fraction, cfg.seed)[0])
        check_settings_fit(cfg, f"training config {' and '.join(train_config_files(config, model)) or '(defaults)'}",
                           data_local=local, train_rows=train_rows, world_size=processes)


def check_optional_packages(config: dict) -> None:
    """The packages the jobs will need besides DeepSpeed (require_deepspeed_for_plans): vllm for
    ``eval_backend: vllm``; flash-attention and a 4-bit method's bitsandbytes as `snrtune train` checks them
    (snrtune.training.settings.check_packages) for every model's training settings."""
    from snrtune.training import settings

    for model, entry in config["models"].items():
        if entry["eval_backend"] == "vllm" and not settings.installed("vllm"):
            raise SnrtuneError(f"config key 'models.{model}.eval_backend': vllm needs the vllm package, which is not "
                               f"installed: pip install vllm")
        for run in runs(config):
            job = train_command(config, model, run)
            settings.check_packages(job.settings(), f"training config {train_config_path(config, model)}", job.method)


def require_deepspeed_for_plans(config: dict) -> None:
    """Every training job that will run under DeepSpeed (its training file's ``deepspeed`` key, or a sharded
    plan: ``--deepspeed config/zero*.json``) finds DeepSpeed installed; one line naming the run otherwise."""
    from snrtune.training import settings

    if settings.deepspeed_installed():
        return
    for model in config["models"]:
        for run in runs(config):
            settings.require_deepspeed(train_command(config, model, run).settings(),
                                       f"training config {' and '.join(train_config_files(config, model))}")
        for run in runs(config):
            plan = train_resources(config, model, run, paths.fill(paths.MODEL, model=model))
            if plan["strategy"] in STRATEGY_FILES:
                raise SnrtuneError(
                    f"training run {model}/{run} is planned on {plan['gpus']} GPUs with {plan['strategy']} "
                    f"(--deepspeed {STRATEGY_FILES[plan['strategy']]}), but DeepSpeed is not installed; expected "
                    f"`{settings.DEEPSPEED_INSTALL}`, or models.{model}.resources.train_gpus: 1")


def check_placement(config: dict) -> None:
    """Every job fits one node and the partition: a training job's GPUs (``train_gpus``, ``per_method``) at
    most ``resources.gpus_per_node`` (training runs on one node: torchrun --standalone), and no memory set
    in the config above ``resources.max_mem_mb``. SnrtuneError with one line naming the key."""
    limits = config["resources"]
    for model, entry in config["models"].items():
        res = entry["resources"]
        values = [("train_gpus", res["train_gpus"], "gpus"), ("mem_mb", res["mem_mb"], "mem_mb"),
                  ("train_mem_mb", res["train_mem_mb"], "mem_mb")]
        values += [(f"per_method.{m}.{k}", v, k) for m, o in res["per_method"].items() for k, v in o.items()]
        for key, value, kind in values:
            key = f"models.{model}.resources.{key}"
            if kind == "gpus" and value is not None and value > limits["gpus_per_node"]:
                raise SnrtuneError(f"config key {key!r}: {value} GPUs, more than resources.gpus_per_node "
                                   f"{limits['gpus_per_node']}; a training job runs on one node")
            if kind == "mem_mb" and value is not None and limits["max_mem_mb"] and value > limits["max_mem_mb"]:
                raise SnrtuneError(f"config key {key!r}: {value} MB, more than resources.max_mem_mb "
                                   f"{limits['max_mem_mb']}")
