"""The workflow layer's one import for the rules (``from snrtune.workflow import config as workflow_config``).

The rules in ``workflow/rules/*.smk`` stay short (inputs, outputs, one ``snrtune`` call); everything that decides
*what* runs and *with which flags* lives in the modules beside this one, by what it serves, so it is tested with
pytest: ``schema`` (validation and defaults), ``plan`` (run names, each training job, sources, resources, report
inputs), ``flags`` (each command's flags), ``preflight`` (checks before any job), ``paths`` (every results path
and wildcard pattern) and ``resources`` (the training estimate). This module gathers the names the rules call,
and only those; everything else (the tests too) imports from the module that defines it.
"""

from __future__ import annotations

from snrtune.hub import resolve_source
from snrtune.workflow.flags import (
    benchmark_flags, flags, job_env, launcher, limit_flag, lm_eval_options, model_args_flag, num_fewshot, report_flags,
    scaled, sharding_flags, train_flags)
from snrtune.workflow.plan import (
    evaluations, hub_dataset, hub_tasks, local_files, report_inputs, selection_file, sweep_candidates, swept_runs,
    train_config_files, train_resources, unswept_runs)
from snrtune.workflow.preflight import preflight
from snrtune.workflow.schema import load_schema, validate_config

__all__ = ["benchmark_flags", "evaluations", "flags", "hub_dataset", "hub_tasks", "job_env", "launcher", "limit_flag",
           "lm_eval_options", "load_schema", "local_files", "model_args_flag", "num_fewshot", "preflight",
           "report_flags", "report_inputs", "resolve_source", "scaled", "selection_file", "sharding_flags",
           "sweep_candidates", "swept_runs", "train_config_files", "train_flags", "train_resources", "unswept_runs",
           "validate_config"]
