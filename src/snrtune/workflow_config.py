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

from snrtune.errors import SnrtuneError
from snrtune.fetch import resolve_package_path
from snrtune.method_names import SELECTION_METHODS  # noqa: F401 (the rules read it as wc.SELECTION_METHODS)


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
    if any(m in SELECTION_METHODS for m in config["methods"]) and not config["top_percent"]:
        raise SnrtuneError("config key 'top_percent': methods spectrum and laser-qlora need at least one t value")
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

def format_t(t: float) -> str:
    """25 -> '25', 12.5 -> '12.5' (the t as it appears in file names and run ids)."""
    return str(int(t)) if float(t).is_integer() else str(t)


def run_name(method: str, t: float | None, seed: int) -> str:
    """'spectrum-t25-s0' for methods with a selection, 'qlora-s0' otherwise (docs/artifacts.md)."""
    if method in SELECTION_METHODS:
        return f"{method}-t{format_t(t)}-s{seed}"
    return f"{method}-s{seed}"


def parse_run(run: str) -> dict[str, Any]:
    """Inverse of run_name: {'method', 'top_percent' (a string, or None), 'seed'}."""
    head, _, seed = run.rpartition("-s")
    if not head or not seed.isdigit():
        raise SnrtuneError(f"run name {run!r}: expected METHOD-tT-sSEED or METHOD-sSEED")
    for method in SELECTION_METHODS:
        if head.startswith(method + "-t"):
            return {"method": method, "top_percent": head[len(method) + 2:], "seed": int(seed)}
    return {"method": head, "top_percent": None, "seed": int(seed)}


def runs(config: dict) -> list[str]:
    """Every training run the config asks for: method × t (selection methods only) × seed."""
    out = []
    for method in config["methods"]:
        ts = config["top_percent"] if method in SELECTION_METHODS else [None]
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
    path = Path(resolve_source(source))
    return [str(path.resolve())] if path.exists() else []


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

def train_config_path(config: dict, model: str) -> str | None:
    return config["models"][model]["train_config"] or config["train"]["config"]


def effective_train_settings(config: dict, model: str) -> dict:
    """The training hyperparameters a run of ``model`` gets: shipped defaults, its train config, max_steps."""
    import importlib.resources

    defaults = yaml.safe_load(importlib.resources.files("snrtune").joinpath("data/train_defaults.yaml").read_text())
    path = train_config_path(config, model)
    user = yaml.safe_load(Path(path).read_text(encoding="utf-8")) if path else {}
    settings = {**defaults, **(user if isinstance(user, dict) else {})}
    if config["train"]["max_steps"]:
        settings["max_steps"] = config["train"]["max_steps"]
    return settings


def model_size(config: dict, model: str, model_dir: str | Path):
    """The size the estimate uses: the fetched parameter table, else the config's ``params_b``, else None."""
    from snrtune import resources

    table = Path(model_dir) / "snrtune_params.json"
    if table.is_file():
        import json

        return resources.size_from_table(json.loads(table.read_text(encoding="utf-8")))
    if config["models"][model]["params_b"]:
        return resources.size_from_count(config["models"][model]["params_b"])
    return None


def train_resources(config: dict, model: str, run: str, model_dir: str | Path) -> dict[str, Any]:
    """GPUs, host memory (MB), runtime (minutes) and sharding of one training job: the config's overrides
    (``models.M.resources.per_method.METHOD``, then ``train_gpus``/``train_mem_mb``/``train_runtime``/
    ``train_strategy``) over the estimate of snrtune.resources."""
    from snrtune import resources

    entry, hw_cfg = config["models"][model], config["resources"]
    res, parsed = entry["resources"], parse_run(run)
    method = parsed["method"]
    cfg = effective_train_settings(config, model)
    settings = resources.Settings(
        method=method, top_percent=float(parsed["top_percent"]) if parsed["top_percent"] else None,
        lora_r=int(cfg["lora_r"]), seq_len=int(cfg["max_seq_length"]), micro_batch=int(cfg["per_device_train_batch_size"]),
        grad_accum=int(cfg["gradient_accumulation_steps"]), gradient_checkpointing=bool(cfg["gradient_checkpointing"]),
        device=entry["device"], max_steps=cfg["max_steps"],
        train_tokens=config["data"]["tokens"] * int(cfg["num_epochs"]) if config["data"]["tokens"] else None)
    hardware = resources.Hardware(gpu_mem_gb=hw_cfg["gpu_mem_gb"], gpus_per_node=hw_cfg["gpus_per_node"],
                                  gpu_tflops=hw_cfg["gpu_tflops"], mfu=hw_cfg["mfu"])
    size = model_size(config, model, model_dir)
    est = resources.estimate(size, settings, hardware) if size else None
    out = {"gpus": est.gpus if est else 0, "mem_mb": est.mem_mb if est else 16000,
           "runtime": (est.runtime_min if est else None) or hw_cfg["default_train_runtime"],
           "strategy": est.strategy if est else "none", "estimated": est is not None}
    for key, field in (("gpus", "train_gpus"), ("mem_mb", "train_mem_mb"), ("runtime", "train_runtime"),
                       ("strategy", "train_strategy")):
        if res[field] is not None:
            out[key] = res[field]
    out.update(res["per_method"].get(method, {}))
    if out["gpus"] <= 1:
        out["strategy"] = "none"
    return out


STRATEGY_FILES = {"zero3": "config/zero3.json", "zero3_offload": "config/zero3_offload.json"}


def sharding_flags(strategy: str, workflow_dir: str | Path) -> str:
    """``--deepspeed config/zero3*.json`` for a sharded training run (ZeRO-3, optionally offloaded), else ''."""
    if strategy not in STRATEGY_FILES:
        return ""
    return "--deepspeed " + shlex.quote(str(Path(workflow_dir) / STRATEGY_FILES[strategy]))


# ------------------------------------------------------------------------------------- report inputs

def report_inputs(config: dict) -> dict[str, list[str]]:
    """Exactly the files the current config produces, for the report: evaluations, run directories (their
    metrics.json), the scan and selections of selection methods, and the training jobs' benchmark TSVs."""
    models, runs_ = list(config["models"]), runs(config)
    selecting = any(m in SELECTION_METHODS for m in config["methods"])
    return {
        "evals": evaluations(config),
        "runs": [f"results/{m}/runs/{r}" for m in models for r in runs_],
        "snr": [f"results/{m}/scan/snr.json" for m in models] if selecting else [],
        "selections": [f"results/{m}/select/t{format_t(t)}.yaml" for m in models for t in config["top_percent"]]
        if selecting else [],
        "benchmarks": [f"results/{m}/benchmarks/train/{r}.tsv" for m in models for r in runs_],
    }


def benchmark_flags(config: dict, paths: list[str]) -> str:
    """``--benchmark MODEL/RUN=TSV`` per training benchmark (paths in report_inputs order, as the rule got them)."""
    ids = [f"{m}/{r}" for m in config["models"] for r in runs(config)]
    return " ".join(f"--benchmark {shlex.quote(f'{i}={p}')}" for i, p in zip(ids, paths))
