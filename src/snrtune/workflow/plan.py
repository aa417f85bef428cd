"""What the workflow plans from the config: run names, selections, per-method settings and the sweep, sources,
hub tasks, each training job's resources, and the report's inputs."""

from __future__ import annotations
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping
import yaml
from snrtune import hub
from snrtune import criteria, method_registry
from snrtune.errors import SnrtuneError
from snrtune.model_dir import PARAMS_FILE
from snrtune.naming import BASE_RUN, parse_run, run_name
from snrtune.workflow import paths


def top_percents(config: dict, method: str) -> list:
    """The t values of ``method``'s runs: [None] without a selection; controls at selection.criteria_top_percent
    if set."""
    spec = method_registry.get(method)
    if not spec.needs_selection:
        return [None]
    if spec.mirrors and config["selection"]["criteria_top_percent"] is not None:
        return list(config["selection"]["criteria_top_percent"])
    return list(config["top_percent"])


def trained_methods(config: dict) -> list[str]:
    """The methods the config trains: ``methods``, each followed by its controls of ``selection.criteria``
    (spectrum-CRITERION for each criterion beyond snr, when spectrum is listed), each once."""
    out: list[str] = []
    for method in config["methods"]:
        out.append(method)
        if method == "spectrum":
            out += [method_registry.control(method, c).name for c in config["selection"]["criteria"]
                    if c != criteria.REFERENCE]
    return list(dict.fromkeys(out))


def runs(config: dict) -> list[str]:
    """Every training run the config asks for: method × t (selection methods only) × seed (snrtune.naming)."""
    return [run_name(method, t, seed) for method in trained_methods(config) for t in top_percents(config, method)
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


def swept_runs(config: dict) -> list[str]:
    """The runs whose learning rate the sweep picks (train_candidate, pick, merge_candidate, evaluate_candidate)."""
    return [run for run in runs(config) if swept(config, run)]


def unswept_runs(config: dict) -> list[str]:
    """The runs the train rule trains itself (one learning rate, or none given)."""
    return [run for run in runs(config) if not swept(config, run)]


def format_lr(lr: float) -> str:
    """3e-3 -> '0.003' (a candidate's directory name: sweep/{run}/lr0.003)."""
    return f"{lr:g}"


def sweep_candidates(config: dict, model: str, run: str) -> list[str]:
    """The run directories of a swept run's candidates, one per learning rate."""
    method = parse_run(run)["method"]
    return [paths.fill(paths.SWEEP_CANDIDATE, model=model, run=run, lr=format_lr(lr))
            for lr in learning_rates(config, method)]


def candidate_evaluations(config: dict) -> list[str]:
    """With ``evaluate.sweep_candidates``, the eval.json of every candidate of every swept run (none otherwise)."""
    if not config["evaluate"]["sweep_candidates"]:
        return []
    return [paths.fill(paths.SWEEP_EVAL, model=model, run=run, lr=format_lr(lr)) for model in config["models"]
            for run in runs(config) if swept(config, run)
            for lr in learning_rates(config, parse_run(run)["method"])]


def evaluations(config: dict) -> list[str]:
    """Every eval.json the workflow produces: each run of each model, plus each base model."""
    names = ([BASE_RUN] if config["evaluate"]["base"] else []) + runs(config)
    return [paths.fill(paths.EVAL, model=model, run=name) for model in config["models"] for name in names]


def local_files(source: str | None) -> list[str]:
    """[path] when ``source`` is a local file or directory (so Snakemake tracks it), else [] (hub id)."""
    if not source:
        return []
    path = Path(hub.resolve_source(source))
    return [str(path.resolve())] if hub.is_local(path) else []


def local_task_names(include_path: str | None) -> set[str]:
    """Tasks and tags defined by snrtune's shipped task YAMLs and by ``include_path`` (no network needed)."""
    from snrtune.task_dirs import SHIPPED_TASKS

    dirs = [SHIPPED_TASKS]
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
    """``data.train`` when it is a hub dataset id (prefetched on the login node; hub.data_kind), else None."""
    data = config["data"]["train"]
    return data if hub.data_kind(hub.resolve_source(data)) == "hub" else None


def train_config_path(config: dict, model: str) -> str | list[str] | None:
    """The model's training file(s): models.M.train_config, else train.config (a path or a list merged in order)."""
    return config["models"][model]["train_config"] or config["train"]["config"]


def train_config_files(config: dict, model: str) -> list[str]:
    """train_config_path as a list of files (the train rule's inputs and --config flags, in merge order)."""
    from snrtune.training.settings import config_paths

    return config_paths(train_config_path(config, model))


def job_assignments(config: dict, method: str, learning_rate: float | None = None) -> dict[str, Any]:
    """The ``--set`` values of ``method``'s training jobs, typed as validate_config parsed them: the method's own
    settings (method_settings) and its learning rate (a sweep candidate's, or the one candidate listed)."""
    values = method_settings(config, method)
    rates = learning_rates(config, method)
    if learning_rate is not None:
        values["learning_rate"] = learning_rate
    elif len(rates) == 1:
        values["learning_rate"] = rates[0]
    return values


def candidate_rate(config: dict, run: str, lr: str) -> float:
    """The learning-rate candidate of a swept run whose directory name (format_lr) is ``lr``: the config's own
    number, so the job trains at exactly the rate the config names."""
    rates = learning_rates(config, parse_run(run)["method"])
    found = [rate for rate in rates if format_lr(rate) == lr]
    if not found:
        raise SnrtuneError(f"run {run}: no learning-rate candidate is written {lr!r}; expected one of "
                           f"{', '.join(map(format_lr, rates)) or 'none'}")
    return found[0]


@dataclass(frozen=True)
class TrainCommand:
    """One training job of the workflow: the options of its `snrtune train` call, typed. The train rules pass
    them as flags (snrtune.workflow.flags.train_flags); the pre-flight check and the resource estimate build the
    job's settings from the same options (``settings``), as `snrtune train` will."""

    method: str
    seed: int
    selection: str | None
    stage: str
    max_steps: int | None
    match_params_of: str | None
    config_files: tuple[str, ...]
    assignments: Mapping[str, Any]  # --set: the method's own settings and learning rate

    def settings(self, world_size: int = 1):
        """The TrainingSettings the job builds in ``world_size`` processes (snrtune.training.settings.load_config:
        SnrtuneError with one line on a bad value or a batch that does not split over the processes)."""
        from snrtune.training import settings

        return settings.load_config(list(self.config_files), self.seed, self.max_steps, self.method,
                                    dict(self.assignments), world_size)


def train_command(config: dict, model: str, run: str, learning_rate: float | None = None) -> TrainCommand:
    """The training job of ``run`` on ``model`` (at one learning-rate candidate of a swept run)."""
    parsed = parse_run(run)
    method = parsed["method"]
    match = config["train"]["laser_qlora_match_params_of"] if method_registry.get(method).rank_matching else None
    return TrainCommand(method=method, seed=parsed["seed"], selection=selection_file(model, run),
                    stage=config["train"]["stage"], max_steps=config["train"]["max_steps"], match_params_of=match,
                    config_files=tuple(train_config_files(config, model)),
                    assignments=job_assignments(config, method, learning_rate))


def model_size(config: dict, model: str, model_dir: str | Path):
    """The size the estimate uses: the fetched parameter table, else the config's ``params_b``, else None."""
    from snrtune.workflow import resources

    table = Path(model_dir) / PARAMS_FILE
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
    cfg = train_command(config, model, run).settings()
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


def report_inputs(config: dict) -> dict[str, list[str]]:
    """Exactly the files the current config produces, for the report: evaluations, run directories (their
    metrics.json), the scan and selections of selection methods, the training jobs' benchmark TSVs and the
    sweep candidates' evaluations (evaluate.sweep_candidates)."""
    models, runs_ = list(config["models"]), runs(config)
    selections = [selection_file(m, r) for m in models for r in runs_]
    return {
        "evals": evaluations(config),
        "runs": [paths.fill(paths.RUN, model=m, run=r) for m in models for r in runs_],
        "snr": [paths.fill(paths.SNR, model=m) for m in models] if any(selections) else [],
        "selections": list(dict.fromkeys(path for path in selections if path)),
        "benchmarks": [paths.benchmark("train", r, model=m) for m, r in benchmarked_runs(config)],
        "candidates": candidate_evaluations(config),
    }


def benchmarked_runs(config: dict) -> list[tuple[str, str]]:
    """(model, run) of the runs trained by the train rule itself (a swept run's job is its chosen candidate's)."""
    return [(m, r) for m in config["models"] for r in unswept_runs(config)]
