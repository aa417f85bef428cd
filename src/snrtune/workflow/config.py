"""Config logic of the Snakemake workflow: schema validation with defaults, run names, command arguments.

The rules in ``workflow/rules/*.smk`` stay short (inputs, outputs, one ``snrtune`` call); everything
that decides *what* runs and *with which flags* lives here, so it is tested with pytest.
"""

from __future__ import annotations

import copy
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from snrtune import hub
from snrtune import method_registry
from snrtune.errors import SnrtuneError
from snrtune.fetch.model import resolve_package_path
from snrtune.naming import BASE_RUN, format_t, parse_run, run_name  # noqa: F401 (the rules call wc.parse_run)
from snrtune.workflow import paths



# ----------------------------------------------------------------------------------------- config

def _defaults_filling_validator(schema: dict) -> jsonschema.protocols.Validator:
    """A Draft 2020-12 validator that writes each property's ``default`` into the instance first."""
    base = jsonschema.Draft202012Validator
    validate_properties = base.VALIDATORS["properties"]

    def properties_with_defaults(validator, properties, instance, schema_):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema_)

    filling = jsonschema.validators.extend(base, {"properties": properties_with_defaults})
    return filling(schema)


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _error_message(error: jsonschema.ValidationError) -> str:
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(k for k in error.instance if k not in allowed)
        key = _key(list(error.absolute_path) + [unknown[0]]) if unknown else _key(error.absolute_path)
        return f"config key {key!r}: unknown key; expected one of: {', '.join(allowed)}"
    return f"config key {_key(error.absolute_path)!r}: {error.message}"


def validate_config(config: dict, schema: dict, workflow_dir: str | Path | None = None) -> dict:
    """Fill defaults into ``config`` (in place) and check it against ``schema`` and the cross-key rules.

    A relative train config path that is not found in the working directory is looked up in
    ``workflow_dir`` (the repository), so a run directory elsewhere can use config/train-*.yaml.
    Raises SnrtuneError with one line naming the first bad key.
    """
    errors = sorted(_defaults_filling_validator(schema).iter_errors(config),
                    key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        raise SnrtuneError(_error_message(errors[0]))
    with_t = [m for m in config["methods"] if method_registry.get(m).needs_selection]
    if with_t and not config["top_percent"]:
        raise SnrtuneError(f"config key 'top_percent': methods {' and '.join(with_t)} need at least one t value")
    check_method_settings(config)
    check_eval_batch_size(config)
    check_report(config)
    check_evaluate(config)
    holders = [("train.config", config["train"], "config")]
    holders += [(f"models.{name}.train_config", model, "train_config") for name, model in config["models"].items()]
    for key, holder, field in holders:
        if isinstance(holder[field], list):  # training files merged in order (an overlay after its base)
            holder[field] = [find_file(path, workflow_dir, f"{key}[{i}]") for i, path in enumerate(holder[field])]
        elif holder[field]:
            holder[field] = find_file(holder[field], workflow_dir, key)
    return config


def check_eval_batch_size(config: dict) -> None:
    """``evaluate.batch_size`` by `snrtune evaluate`'s own rule (parse_batch_size), so the config refuses what the
    evaluate jobs would refuse after training."""
    from snrtune.evaluation.evaluate import parse_batch_size

    value = config["evaluate"]["batch_size"]
    try:
        parse_batch_size(str(value))
    except SnrtuneError:
        raise SnrtuneError(f"config key 'evaluate.batch_size': {value!r} is not a positive integer, 'auto' or 'auto:N' "
                           f"(as `snrtune evaluate --batch-size` takes it)") from None


def check_evaluate(config: dict) -> None:
    """The lm-eval options that only make sense together (the same rules `snrtune evaluate` applies)."""
    ev = config["evaluate"]
    if ev["system_instruction"] is not None and not ev["system_instruction"].strip():
        raise SnrtuneError("config key 'evaluate.system_instruction': blank; expected a system prompt, or null")
    if ev["fewshot_as_multiturn"]:
        plain = sorted(name for name, model in config["models"].items() if not model["chat_template"])
        if plain:
            raise SnrtuneError(f"config key 'evaluate.fewshot_as_multiturn': true needs the chat template, and "
                               f"models {', '.join(plain)} have chat_template: false")
    if ev["max_batch_size"] is not None and not str(ev["batch_size"]).startswith("auto"):
        raise SnrtuneError(f"config key 'evaluate.max_batch_size': it bounds batch_size auto only; expected "
                           f"batch_size: auto, got {ev['batch_size']}")
    named = [t["name"] for t in ev["tasks"]]
    for task in ev["limit"] if isinstance(ev["limit"], dict) else ():  # a typo would evaluate every example
        if task not in named:
            raise SnrtuneError(f"config key 'evaluate.limit.{task}': {task!r} is not in evaluate.tasks; "
                               f"expected one of: {', '.join(named)}")


def lm_eval_options(evaluate: dict) -> dict[str, Any]:
    """The evaluate: section's prompt and generation options as `snrtune evaluate` keyword flags (for flags())."""
    multiturn = evaluate["fewshot_as_multiturn"]
    return {"fewshot_as_multiturn": multiturn is True, "no_fewshot_as_multiturn": multiturn is False,
            "system_instruction": evaluate["system_instruction"], "max_batch_size": evaluate["max_batch_size"],
            "gen_kwargs": model_args_flag(evaluate["gen_kwargs"])}


def find_file(path: str, workflow_dir: str | Path | None, key: str) -> str:
    """``path`` if it exists, else the same relative path under ``workflow_dir``; an error names ``key``."""
    if Path(path).is_file():
        return path
    if workflow_dir and not Path(path).is_absolute() and (Path(workflow_dir) / path).is_file():
        return str(Path(workflow_dir) / path)
    raise SnrtuneError(f"config key {key!r}: file {path!r} does not exist")


def load_schema(path: str | Path) -> dict:
    """The config schema, its method enums filled from snrtune.method_registry (the one table of methods)."""
    with open(path, encoding="utf-8") as handle:
        schema = yaml.safe_load(handle)
    defs = schema["$defs"]
    defs["method"] = {"enum": list(method_registry.names())}
    defs["method_or_all"] = {"enum": ["all", *method_registry.names()]}
    defs["rank_reference"] = {"enum": list(method_registry.rank_references())}
    return schema


def _number(value: Any, key: str) -> float:
    """A positive number, also when YAML read it as a string ('3e-3' has no dot, so YAML 1.1 keeps it text)."""
    try:
        number = float(value) if not isinstance(value, bool) else float("nan")
    except (TypeError, ValueError):
        number = float("nan")
    if not number > 0 or number == float("inf"):
        raise SnrtuneError(f"config key {key!r}: expected a positive number, got {value!r}")
    return number


def check_method_settings(config: dict) -> None:
    """Per-method settings and learning-rate candidates: known methods, numbers, one place per learning rate;
    the controls' t values among top_percent (so each control has its SNR selection to be compared with)."""
    train = config["train"]
    for method, settings in train["method_settings"].items():
        for key in [k for k, v in settings.items() if v is None]:  # null in an overlay deletes the setting
            del settings[key]
        if "learning_rate" in settings:
            settings["learning_rate"] = _number(settings["learning_rate"], f"train.method_settings.{method}.learning_rate")
            if method in train["learning_rates"]:
                raise SnrtuneError(f"config key 'train.learning_rates.{method}': the learning rate of {method} is also "
                                   f"set in train.method_settings.{method}; expected it in one place")
    for method, rates in train["learning_rates"].items():
        train["learning_rates"][method] = [_number(r, f"train.learning_rates.{method}") for r in rates]
        if len(set(train["learning_rates"][method])) != len(rates):
            raise SnrtuneError(f"config key 'train.learning_rates.{method}': a learning rate is listed twice")
    reference = config["train"]["laser_qlora_match_params_of"]
    for method in (m for m in train["method_settings"] if reference and method_registry.get(m).rank_matching):
        own = {k: v for k, v in train["method_settings"][method].items() if k in LORA_SHAPE}
        theirs = {k: v for k, v in train["method_settings"].get(reference, {}).items() if k in LORA_SHAPE}
        if any(theirs.get(k, v) != v for k, v in own.items()) or (own and own != theirs):
            raise SnrtuneError(f"config key 'train.method_settings.{method}': {method} matches {reference}'s "
                               f"parameter count and LoRA scale, so it takes {', '.join(LORA_SHAPE)} from "
                               f"train.method_settings.{reference}; expected none of them here")
    extra = [t for t in config["control_top_percent"] or [] if t not in config["top_percent"]]
    if extra:
        raise SnrtuneError(f"config key 'control_top_percent': {extra} not in top_percent {config['top_percent']}; "
                           "a control is compared with the SNR selection at the same t")


def check_report(config: dict) -> None:
    """report.target_task and report.retention_tasks name evaluated tasks, and the target is not also retention."""
    names = [task["name"] for task in config["evaluate"]["tasks"]]
    target, retention = config["report"]["target_task"], config["report"]["retention_tasks"]
    if target is not None and target not in names:
        raise SnrtuneError(f"config key 'report.target_task': {target!r} is not in evaluate.tasks; expected one of "
                           f"{', '.join(names)}")
    for task in retention or []:
        if task not in names or task == target:
            raise SnrtuneError(f"config key 'report.retention_tasks': {task!r} is "
                               f"{'the target task' if task == target else 'not in evaluate.tasks'}; expected "
                               f"other tasks of evaluate.tasks ({', '.join(n for n in names if n != target)})")


def report_flags(config: dict) -> str:
    """``--target-task X --retention-tasks A,B`` of `snrtune report`, from the config's report section."""
    return flags(target_task=config["report"]["target_task"], retention_tasks=config["report"]["retention_tasks"])


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

    check_placement(config)
    formats = set()
    for model in config["models"]:
        for run in runs(config):
            method = parse_run(run)["method"]
            processes = max(1, train_resources(config, model, run, paths.fill(paths.MODEL, model=model))["gpus"])
            formats |= {run_settings(config, model, method, lr, processes).dataset_format
                        for lr in learning_rates(config, method) or [None]}
    if packages_here:
        require_deepspeed_for_plans(config)
        check_optional_packages(config)
    data = resolve_source(config["data"]["train"])
    if data_check.data_kind(data) == "local":
        for dataset_format in sorted(formats):  # one per training file that sets its own
            data_check.check_training_data(data, dataset_format, config["train"]["stage"], max_rows=max_rows)


def check_optional_packages(config: dict) -> None:
    """The packages the jobs will need besides DeepSpeed (require_deepspeed_for_plans): vllm for
    ``eval_backend: vllm``; flash-attention and a 4-bit method's bitsandbytes as `snrtune train` checks them
    (snrtune.training.settings.check_packages) for every model's training settings."""
    from snrtune.training import settings

    for model, entry in config["models"].items():
        if entry["eval_backend"] == "vllm" and not settings.installed("vllm"):
            raise SnrtuneError(f"config key 'models.{model}.eval_backend': vllm needs the vllm package, which is not "
                               f"installed: pip install vllm")
        for method in config["methods"]:
            settings.check_packages(run_settings(config, model, method),
                                    f"training config {train_config_path(config, model)}", method)


def require_deepspeed_for_plans(config: dict) -> None:
    """Every training job that will run under DeepSpeed (its training file's ``deepspeed`` key, or a sharded
    plan: ``--deepspeed config/zero*.json``) finds DeepSpeed installed; one line naming the run otherwise."""
    from snrtune.training import settings

    if settings.deepspeed_installed():
        return
    for model in config["models"]:
        for method in config["methods"]:
            settings.require_deepspeed(run_settings(config, model, method),
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


# -------------------------------------------------------------------------------------- run names

def top_percents(config: dict, method: str) -> list:
    """The t values of ``method``'s runs: [None] without a selection; controls at control_top_percent if set."""
    spec = method_registry.get(method)
    if not spec.needs_selection:
        return [None]
    if spec.mirrors and config["control_top_percent"] is not None:
        return list(config["control_top_percent"])
    return list(config["top_percent"])


def runs(config: dict) -> list[str]:
    """Every training run the config asks for: method × t (selection methods only) × seed (snrtune.naming)."""
    return [run_name(method, t, seed) for method in config["methods"] for t in top_percents(config, method)
            for seed in config["seeds"]]


def selection_file(model: str, run: str) -> str | None:
    """The selection a run trains: select/t{T}.yaml (SNR), select/t{T}-{KIND}-s{SEED}.yaml (a control), or None."""
    parsed = parse_run(run)
    kind = method_registry.get(parsed["method"]).selection_kind
    if kind is None:
        return None
    if kind == "snr":
        return paths.fill(paths.SELECTION, model=model, t=parsed["top_percent"])
    return paths.fill(paths.CONTROL_SELECTION, model=model, t=parsed["top_percent"], kind=kind, seed=parsed["seed"])


# ------------------------------------------------------------------- per-method settings and the sweep

def settings_source(method: str) -> str:
    """Whose settings a method trains with: its own, or, for a control, the method it mirrors."""
    return method_registry.get(method).mirrors or method


LORA_SHAPE = ("lora_r", "lora_alpha", "use_rslora")  # what a rank-matched method takes from the method it matches


def method_settings(config: dict, method: str) -> dict[str, Any]:
    """train.method_settings of ``method`` (of the mirrored method for a control without its own). A method that
    matches another's parameter count (laser-qlora with train.laser_qlora_match_params_of) takes that method's
    rank, alpha and rsLoRA choice: the rank it is matched from and the scale it keeps are the reference's."""
    table = config["train"]["method_settings"]
    settings = dict(table.get(method, table.get(settings_source(method), {})))
    reference = config["train"]["laser_qlora_match_params_of"]
    if reference and method_registry.get(method).rank_matching:
        settings.update({k: v for k, v in table.get(reference, {}).items() if k in LORA_SHAPE})
    return settings


def learning_rates(config: dict, method: str) -> list[float]:
    """The learning-rate candidates of ``method``: its own list, the mirrored method's, ``all``, or []."""
    table = config["train"]["learning_rates"]
    for key in (method, settings_source(method), "all"):
        if key in table:
            return list(table[key])
    return []


def swept(config: dict, run: str) -> bool:
    """A run whose learning rate is chosen by the sweep (more than one candidate)."""
    return len(learning_rates(config, parse_run(run)["method"])) > 1


def format_lr(lr: float) -> str:
    """3e-3 -> '0.003' (a candidate's directory name: sweep/{run}/lr0.003)."""
    return f"{lr:g}"


def sweep_candidates(config: dict, model: str, run: str) -> list[str]:
    """The run directories of a swept run's candidates, one per learning rate."""
    method = parse_run(run)["method"]
    return [paths.fill(paths.SWEEP_CANDIDATE, model=model, run=run, lr=format_lr(lr))
            for lr in learning_rates(config, method)]


def settings_flags(config: dict, method: str, lr: float | None = None) -> str:
    """``--set KEY=VALUE`` flags of a method's own settings (and its learning rate: a candidate's, or the one
    candidate listed), on top of the shared training config that holds what must stay equal."""
    settings = method_settings(config, method)
    rates = learning_rates(config, method)
    if lr is not None:
        settings["learning_rate"] = lr
    elif len(rates) == 1:
        settings["learning_rate"] = rates[0]
    return " ".join(f"--set {shlex.quote(f'{key}={value}')}" for key, value in settings.items())


def evaluations(config: dict) -> list[str]:
    """Every eval.json the workflow produces: each run of each model, plus each base model."""
    names = ([BASE_RUN] if config["evaluate"]["base"] else []) + runs(config)
    return [paths.fill(paths.EVAL, model=model, run=name) for model in config["models"] for name in names]


# ---------------------------------------------------------------------------------------- sources

def resolve_source(source: str) -> str:
    """'pkg://PACKAGE/REL/PATH' -> the file inside the installed package (not imported); else unchanged."""
    return str(resolve_package_path(source)) if source.startswith("pkg://") else source


def local_files(source: str | None) -> list[str]:
    """[path] when ``source`` is a local file or directory (so Snakemake tracks it), else [] (hub id)."""
    if not source:
        return []
    path = Path(resolve_source(source))
    return [str(path.resolve())] if hub.is_local(path) else []


# ------------------------------------------------------------------------------- command arguments

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


# ------------------------------------------------------------------------------ hub and offline jobs

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def job_env(config: dict, offline: bool) -> str:
    """The shell prefix of a step: HF_HOME from ``hub.hf_home`` and, for every step but the downloads on the
    login node, the offline switches (``export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1; ``)."""
    env = {"HF_HOME": config["hub"]["hf_home"]} if config["hub"]["hf_home"] else {}
    env.update(OFFLINE_ENV if offline else {})
    if not env:
        return ""
    return "export " + " ".join(f"{k}={shlex.quote(str(v))}" for k, v in env.items()) + "; "


def local_task_names(include_path: str | None) -> set[str]:
    """Tasks and tags defined by snrtune's shipped task YAMLs and by ``include_path`` (no network needed)."""
    import importlib.resources

    dirs = [Path(str(importlib.resources.files("snrtune").joinpath("data/tasks")))]
    if include_path and Path(include_path).is_dir():
        dirs.append(Path(include_path))
    names: set[str] = set()
    for directory in dirs:
        for path in directory.rglob("*.yaml"):
            try:
                spec = yaml.safe_load(path.read_text(encoding="utf-8"))
            except (yaml.YAMLError, UnicodeDecodeError):
                continue
            if isinstance(spec, dict):
                tags = spec.get("tag") or []
                names |= {str(spec[k]) for k in ("task", "group") if spec.get(k)}
                names |= set(map(str, [tags] if isinstance(tags, str) else tags))
    return names


def hub_tasks(config: dict) -> list[str]:
    """The evaluation tasks whose data comes from the hub (prefetched on the login node)."""
    local = local_task_names(config["evaluate"]["include_path"])
    return [t["name"] for t in config["evaluate"]["tasks"] if t["name"] not in local]


def hub_dataset(config: dict) -> str | None:
    """``data.train`` when it is a hub dataset id (prefetched on the login node), else None."""
    return None if local_files(config["data"]["train"]) else config["data"]["train"]


# ------------------------------------------------------------------------------ training resources

def train_config_path(config: dict, model: str) -> str | list[str] | None:
    """The model's training file(s): models.M.train_config, else train.config (a path or a list merged in order)."""
    return config["models"][model]["train_config"] or config["train"]["config"]


def train_config_files(config: dict, model: str) -> list[str]:
    """train_config_path as a list of files (the train rule's inputs and --config flags, in merge order)."""
    from snrtune.training.settings import config_paths

    return config_paths(train_config_path(config, model))


def config_flags(config: dict, model: str) -> str:
    """``--config A --config B``: the training files of ``model``, merged in this order by `snrtune train`."""
    return " ".join(f"--config {shlex.quote(path)}" for path in train_config_files(config, model))


def run_settings(config: dict, model: str, method: str, learning_rate: float | None = None, world_size: int = 1):
    """The TrainingSettings `snrtune train` builds for ``method`` on ``model`` (at one learning-rate candidate)
    in a job of ``world_size`` processes: the method's overrides < the model's training file(s) < the method's own
    settings (``--set``) < --max-steps, checked (SnrtuneError with one line on a bad value or a batch that does
    not split over the processes)."""
    from snrtune.training import settings

    own = method_settings(config, method) | ({"learning_rate": learning_rate} if learning_rate is not None else {})
    return settings.load_settings(train_config_path(config, model), method_registry.get(method).train_overrides,
                                  method, own, world_size=world_size, max_steps=config["train"]["max_steps"])


def model_size(config: dict, model: str, model_dir: str | Path):
    """The size the estimate uses: the fetched parameter table, else the config's ``params_b``, else None."""
    from snrtune.workflow import resources

    table = Path(model_dir) / "snrtune_params.json"
    if table.is_file():
        import json

        return resources.size_from_table(json.loads(table.read_text(encoding="utf-8")))
    if config["models"][model]["params_b"]:
        return resources.size_from_count(config["models"][model]["params_b"])
    return None


def train_resources(config: dict, model: str, run: str, model_dir: str | Path) -> dict[str, Any]:
    """GPUs, host memory (MB), runtime (minutes), sharding and CPU threads of one training job: the config's overrides
    (``models.M.resources.per_method.METHOD``, then ``train_gpus``/``train_mem_mb``/``train_runtime``/
    ``train_strategy``) over the estimate of snrtune.workflow.resources."""
    from snrtune.workflow import resources

    entry, hw_cfg = config["models"][model], config["resources"]
    res, parsed = entry["resources"], parse_run(run)
    method = parsed["method"]
    cfg = run_settings(config, model, method)
    settings = resources.TrainingJob(  # a control costs what the method it mirrors costs
        method=settings_source(method), top_percent=float(parsed["top_percent"]) if parsed["top_percent"] else None,
        lora_r=cfg.lora_r, seq_len=cfg.max_seq_length, micro_batch=cfg.per_device_train_batch_size,
        grad_accum=cfg.gradient_accumulation_steps, gradient_checkpointing=cfg.gradient_checkpointing,
        device=entry["device"], max_steps=cfg.max_steps,
        train_tokens=config["data"]["tokens"] * int(cfg.num_epochs) if config["data"]["tokens"] else None)
    hardware = resources.Hardware(gpu_mem_gb=hw_cfg["gpu_mem_gb"], gpus_per_node=hw_cfg["gpus_per_node"],
                                  gpu_tflops=hw_cfg["gpu_tflops"], mfu=hw_cfg["mfu"])
    size = model_size(config, model, model_dir)
    est = resources.estimate(size, settings, hardware) if size else None
    out = {"gpus": est.gpus if est else 0, "mem_mb": est.mem_mb if est else 16000,
           "runtime": (est.runtime_min if est else None) or hw_cfg["default_train_runtime"],
           "strategy": est.strategy if est else "none", "estimated": est is not None,
           "threads": res["train_threads"] or res["threads"]}
    for key, field in (("gpus", "train_gpus"), ("mem_mb", "train_mem_mb"), ("runtime", "train_runtime"),
                       ("strategy", "train_strategy")):
        if res[field] is not None:
            out[key] = res[field]
    own = res["per_method"].get(method, res["per_method"].get(settings_source(method), {}))
    out.update(own)
    if out["gpus"] <= 1:
        out["strategy"] = "none"
    if est and (out["gpus"], out["strategy"]) != (est.gpus, est.strategy) and res["train_mem_mb"] is None \
            and "mem_mb" not in own:  # host memory for the GPUs and sharding asked for
        out["mem_mb"] = resources.host_mem_mb(size, settings, est.trainable, out["gpus"], out["strategy"])
    if hw_cfg["max_mem_mb"] and out["mem_mb"] > hw_cfg["max_mem_mb"]:
        raise SnrtuneError(f"models.{model}: training {run} needs {out['mem_mb']} MB of host memory, more than "
                           f"resources.max_mem_mb {hw_cfg['max_mem_mb']}; set models.{model}.resources.train_mem_mb "
                           "or per_method.METHOD.mem_mb")
    if hw_cfg["max_runtime"]:  # a longer run is cut at the limit and resumes from its checkpoint on the retry
        out["runtime"] = min(out["runtime"], hw_cfg["max_runtime"])
    return out


STRATEGY_FILES = {"zero2": "config/zero2.json", "zero3": "config/zero3.json",
                  "zero3_offload": "config/zero3_offload.json"}  # zero2: only as an override (train_strategy)


def sharding_flags(strategy: str, workflow_dir: str | Path) -> str:
    """``--deepspeed config/zero*.json`` for a sharded training run (ZeRO-3, optionally offloaded, or ZeRO-2
    when the config asks for it), else ''."""
    if strategy not in STRATEGY_FILES:
        return ""
    return "--deepspeed " + shlex.quote(str(Path(workflow_dir) / STRATEGY_FILES[strategy]))


# ------------------------------------------------------------------------------------- report inputs

def report_inputs(config: dict) -> dict[str, list[str]]:
    """Exactly the files the current config produces, for the report: evaluations, run directories (their
    metrics.json), the scan and selections of selection methods, and the training jobs' benchmark TSVs."""
    models, runs_ = list(config["models"]), runs(config)
    selections = [selection_file(m, r) for m in models for r in runs_]
    return {
        "evals": evaluations(config),
        "runs": [paths.fill(paths.RUN, model=m, run=r) for m in models for r in runs_],
        "snr": [paths.fill(paths.SNR, model=m) for m in models] if any(selections) else [],
        "selections": list(dict.fromkeys(path for path in selections if path)),
        "benchmarks": [paths.benchmark("train", r, model=m) for m, r in benchmarked_runs(config)],
    }


def benchmarked_runs(config: dict) -> list[tuple[str, str]]:
    """(model, run) of the runs trained by the train rule itself (a swept run's job is its chosen candidate's)."""
    return [(m, r) for m in config["models"] for r in runs(config) if not swept(config, r)]


def benchmark_flags(config: dict, paths: list[str]) -> str:
    """``--benchmark MODEL/RUN=TSV`` per training benchmark (paths in report_inputs order, as the rule got them)."""
    ids = [f"{m}/{r}" for m, r in benchmarked_runs(config)]
    return " ".join(f"--benchmark {shlex.quote(f'{i}={p}')}" for i, p in zip(ids, paths))
