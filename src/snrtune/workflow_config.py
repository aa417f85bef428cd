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

from snrtune import method_registry
from snrtune.errors import SnrtuneError
from snrtune.fetch import resolve_package_path
from snrtune.naming import format_t, parse_run, run_name  # noqa: F401 (the rules call wc.parse_run)

SELECTION_METHODS = method_registry.selection_names()  # the rules read it as wc.SELECTION_METHODS


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
    holders = [("train.config", config["train"], "config")]
    holders += [(f"models.{name}.train_config", model, "train_config") for name, model in config["models"].items()]
    for key, holder, field in holders:
        if holder[field]:
            holder[field] = find_file(holder[field], workflow_dir, key)
    return config


def find_file(path: str, workflow_dir: str | Path | None, key: str) -> str:
    """``path`` if it exists, else the same relative path under ``workflow_dir``; an error names ``key``."""
    if Path(path).is_file():
        return path
    if workflow_dir and not Path(path).is_absolute() and (Path(workflow_dir) / path).is_file():
        return str(Path(workflow_dir) / path)
    raise SnrtuneError(f"config key {key!r}: file {path!r} does not exist")


def load_schema(path: str | Path) -> dict:
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


# -------------------------------------------------------------------------------------- run names

def runs(config: dict) -> list[str]:
    """Every training run the config asks for: method × t (selection methods only) × seed (snrtune.naming)."""
    out = []
    for method in config["methods"]:
        ts = config["top_percent"] if method_registry.get(method).needs_selection else [None]
        out += [run_name(method, t, seed) for t in ts for seed in config["seeds"]]
    return out


def evaluations(config: dict) -> list[str]:
    """Every eval.json the workflow produces: each run of each model, plus each base model."""
    names = (["base"] if config["evaluate"]["base"] else []) + runs(config)
    return [f"results/{model}/eval/{name}.json" for model in config["models"] for name in names]


# ---------------------------------------------------------------------------------------- sources

def resolve_source(source: str) -> str:
    """'pkg://PACKAGE/REL/PATH' -> the file inside the installed package (not imported); else unchanged."""
    return str(resolve_package_path(source)) if source.startswith("pkg://") else source


def local_files(source: str | None) -> list[str]:
    """[path] when ``source`` is a local file or directory (so Snakemake tracks it), else [] (hub id)."""
    if not source:
        return []
    path = resolve_source(source)
    return [path] if Path(path).exists() else []


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


def num_fewshot(tasks: list[dict]) -> str | None:
    """'arc_challenge=25,hellaswag=10' from the tasks that set num_fewshot (None if none does)."""
    pairs = [f"{t['name']}={t['num_fewshot']}" for t in tasks if t.get("num_fewshot") is not None]
    return ",".join(pairs) or None


def scaled(value: int, attempt: int, growth: float) -> int:
    """A memory or runtime request for a retry: value × growth^(attempt-1)."""
    return int(round(value * growth ** (attempt - 1)))
