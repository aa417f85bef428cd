"""The workflow config: schema validation with defaults filled in, and the cross-key rules a schema cannot state."""

from __future__ import annotations
import copy
from pathlib import Path
import jsonschema
import yaml
from snrtune import criteria, method_registry
from snrtune.errors import SnrtuneError
from snrtune.training import settings as training_settings
from snrtune.workflow.plan import LORA_SHAPE


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
    if "control_top_percent" in config:
        raise SnrtuneError("config key 'control_top_percent': renamed; expected selection.criteria_top_percent "
                           "(docs/workflow.md)")
    errors = sorted(_defaults_filling_validator(schema).iter_errors(config),
                    key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        raise SnrtuneError(_error_message(errors[0]))
    with_t = [m for m in config["methods"] if method_registry.get(m).needs_selection]
    if with_t and not config["top_percent"]:
        raise SnrtuneError(f"config key 'top_percent': methods {' and '.join(with_t)} need at least one t value")
    check_method_settings(config)
    check_criteria(config)
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
    from snrtune.evaluation.options import parse_batch_size

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


def find_file(path: str, workflow_dir: str | Path | None, key: str) -> str:
    """``path`` if it exists, else the same relative path under ``workflow_dir``; an error names ``key``."""
    if Path(path).is_file():
        return path
    if workflow_dir and not Path(path).is_absolute() and (Path(workflow_dir) / path).is_file():
        return str(Path(workflow_dir) / path)
    raise SnrtuneError(f"config key {key!r}: file {path!r} does not exist")


def load_schema(path: str | Path) -> dict:
    """The config schema, its method enums and default methods filled from snrtune.method_registry (the one table
    of methods), its per-method training settings from the fields of TrainingSettings (the one definition of a
    setting)."""
    from snrtune.training import setting_views

    with open(path, encoding="utf-8") as handle:
        schema = yaml.safe_load(handle)
    defs = schema["$defs"]
    defs["method"] = {"enum": list(method_registry.names())}
    defs["method_or_all"] = {"enum": ["all", *method_registry.names()]}
    defs["rank_reference"] = {"enum": list(method_registry.rank_references())}
    defs["criterion"] = {"enum": list(criteria.names())}
    defs["method_settings"] = setting_views.method_settings_schema()
    defs["learning_rate"] = setting_views.learning_rate_schema()
    schema["properties"]["methods"]["default"] = list(method_registry.default_methods())
    return schema


def check_method_settings(config: dict) -> None:
    """Per-method settings and learning-rate candidates: known methods, numbers, one place per learning rate;
    the controls' t values among top_percent (so each control has its SNR selection to be compared with)."""
    train = config["train"]
    for method, settings in train["method_settings"].items():
        for key in [k for k, v in settings.items() if v is None]:  # null in an overlay deletes the setting
            del settings[key]
        for key, value in settings.items():  # typed here, once, by the setting's own check
            where = f"config key 'train.method_settings.{method}.{key}'"
            settings[key] = training_settings.parse_value(key, value, where)
        if "learning_rate" in settings and method in train["learning_rates"]:
            raise SnrtuneError(f"config key 'train.learning_rates.{method}': the learning rate of {method} is also "
                               f"set in train.method_settings.{method}; expected it in one place")
    for method, rates in train["learning_rates"].items():
        train["learning_rates"][method] = [
            training_settings.parse_value("learning_rate", rate, f"config key 'train.learning_rates.{method}'")
            for rate in rates]
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
    extra = [t for t in config["selection"]["criteria_top_percent"] or [] if t not in config["top_percent"]]
    if extra:
        raise SnrtuneError(f"config key 'selection.criteria_top_percent': {extra} not in top_percent "
                           f"{config['top_percent']}; a control is compared with the SNR selection at the same t")


def check_criteria(config: dict) -> None:
    """``selection.criteria`` beyond snr trains controls of spectrum: spectrum must be among the methods."""
    others = [c for c in config["selection"]["criteria"] if c != criteria.REFERENCE]
    if others and "spectrum" not in config["methods"]:
        raise SnrtuneError(f"config key 'selection.criteria': {', '.join(others)} train controls of spectrum, which "
                           f"is not in methods ({', '.join(config['methods'])}); expected spectrum in methods, or "
                           "criteria: [snr]")


def check_report(config: dict) -> None:
    """report.target_task and report.retention_tasks name evaluated tasks, the target is not also retention, and
    at most one margin is set."""
    names = [task["name"] for task in config["evaluate"]["tasks"]]
    if config["report"]["margin"] is not None and config["report"]["margin_of_gain"] is not None:
        raise SnrtuneError("config key 'report.margin_of_gain': set together with report.margin; expected one of them")
    target, retention = config["report"]["target_task"], config["report"]["retention_tasks"]
    if target is not None and target not in names:
        raise SnrtuneError(f"config key 'report.target_task': {target!r} is not in evaluate.tasks; expected one of "
                           f"{', '.join(names)}")
    for task in retention or []:
        if task not in names or task == target:
            raise SnrtuneError(f"config key 'report.retention_tasks': {task!r} is "
                               f"{'the target task' if task == target else 'not in evaluate.tasks'}; expected "
                               f"other tasks of evaluate.tasks ({', '.join(n for n in names if n != target)})")
