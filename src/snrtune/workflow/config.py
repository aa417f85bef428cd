"""The workflow layer's one import for the rules (``from snrtune.workflow import config as wc``).

The rules in ``workflow/rules/*.smk`` stay short (inputs, outputs, one ``snrtune`` call); everything that decides
*what* runs and *with which flags* lives in the modules beside this one, by what it serves, so it is tested with
pytest: ``schema`` (validation and defaults), ``plan`` (run names, settings, sources, resources, report inputs),
``flags`` (each command's flags), ``preflight`` (checks before any job), ``paths`` (every results path) and
``resources`` (the training estimate). This module only gathers their names.
"""

from __future__ import annotations

from pathlib import Path

from snrtune.naming import BASE_RUN, format_t, parse_run, run_name
from snrtune.workflow.schema import (
    validate_config, check_eval_batch_size, check_evaluate, find_file, load_schema, check_method_settings,
    check_report)
from snrtune.workflow.plan import (
    top_percents, runs, selection_file, settings_source, LORA_SHAPE, method_settings, learning_rates, swept,
    format_lr, sweep_candidates, candidate_evaluations, evaluations, resolve_source, local_files, local_task_names,
    hub_tasks, hub_dataset,
    train_config_path, train_config_files, run_settings, model_size, train_resources, STRATEGY_FILES, report_inputs,
    benchmarked_runs)
from snrtune.workflow.flags import (
    lm_eval_options, report_flags, settings_flags, flags, launcher, model_args_flag, num_fewshot, limit_flag,
    scaled, OFFLINE_ENV, job_env, config_flags, sharding_flags, benchmark_flags)
from snrtune.workflow.preflight import (
    PREFLIGHT_ROWS, preflight, check_optional_packages, require_deepspeed_for_plans, check_placement)

__all__ = ["Path", "BASE_RUN", "format_t", "parse_run", "run_name", "validate_config", "check_eval_batch_size",
           "check_evaluate", "find_file", "load_schema", "check_method_settings", "check_report",
           "top_percents", "runs", "selection_file", "settings_source", "LORA_SHAPE", "method_settings",
           "learning_rates", "swept", "format_lr", "sweep_candidates", "candidate_evaluations", "evaluations",
           "resolve_source",
           "local_files", "local_task_names", "hub_tasks", "hub_dataset", "train_config_path",
           "train_config_files", "run_settings", "model_size", "train_resources", "STRATEGY_FILES",
           "report_inputs", "benchmarked_runs", "lm_eval_options", "report_flags", "settings_flags", "flags",
           "launcher", "model_args_flag", "num_fewshot", "limit_flag", "scaled", "OFFLINE_ENV", "job_env",
           "config_flags", "sharding_flags", "benchmark_flags", "PREFLIGHT_ROWS", "preflight",
           "check_optional_packages", "require_deepspeed_for_plans", "check_placement"]
