"""Finding and reading what the report reads: eval.json, metrics.json, snr.json and selection YAMLs, told apart
by their keys (docs/artifacts.md), never by their paths; each eval.json and metrics.json validated on reading
(one line naming the file and key). An eval.json whose run identity says ``sweep_candidate`` (a learning-rate
candidate merged with `snrtune merge --sweep-candidate`) goes under "candidate", never among the evaluations
the report ranks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import yaml

from snrtune.artifact_names import METRICS_FILE
from snrtune.errors import SnrtuneError
from snrtune.spectrum import selection_file


MAX_BYTES = 200 * 1024 * 1024


def kind_of(obj) -> str | None:
    """Which snrtune artifact a parsed file is, judged by its keys."""
    if not isinstance(obj, dict):
        return None
    if {"run", "results", "config"} <= obj.keys():
        return "eval"
    if {"run", "train_loss", "trainable_params"} <= obj.keys():
        return "metrics"
    if {"modules", "parameters", "total_params"} <= obj.keys():
        return "snr"
    if {"unfrozen_parameters", "modules", "trainable_params"} <= obj.keys():
        return "selection"
    return None


def read_artifact(path: Path) -> tuple[str | None, dict | None]:
    """(kind, parsed content) of a file, (None, None) when it is no snrtune artifact."""
    if path.suffix not in (".json", ".yaml", ".yml") or not path.is_file() or path.stat().st_size > MAX_BYTES:
        return None, None
    try:
        text = path.read_text(encoding="utf-8")
        obj = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError):
        return None, None
    return kind_of(obj), obj


def discover(results_dir: Path) -> dict[str, list[dict]]:
    """Every artifact anywhere under ``results_dir``."""
    return collect(sorted(results_dir.rglob("*")), strict=False)


def collect(paths, strict: bool = True) -> dict[str, list[dict]]:
    """The artifacts among ``paths`` (a run directory stands for its metrics.json); with ``strict`` a path that
    is missing or no snrtune artifact is an error."""
    found: dict[str, list[dict]] = {"eval": [], "candidate": [], "metrics": [], "snr": [], "selection": []}
    for path in map(Path, paths):
        if strict and path.is_dir():
            path = path / METRICS_FILE
        kind, obj = read_artifact(path)
        if kind:
            obj["_path"] = str(path)
            if kind in VALIDATE:
                VALIDATE[kind](obj, path)
            found["candidate" if kind == "eval" and is_candidate(obj, path) else kind].append(obj)
        elif strict:
            raise SnrtuneError(f"--files: {str(path)!r} is not an eval.json, metrics.json, snr.json or selection "
                               f"file{'' if path.exists() else ' (it does not exist)'}")
    # a copied file must not count as another seed; two eval files of one run on different tasks are both kept
    keys = {"eval": lambda item: (item["run"]["id"], tuple(sorted(item["results"]))),
            "candidate": lambda item: (item["run"]["id"], item["run"]["learning_rate"], tuple(sorted(item["results"]))),
            "metrics": lambda item: item["run"]["id"]}
    for kind, key in keys.items():
        unique = {key(item): item for item in reversed(found[kind])}
        found[kind] = sorted(unique.values(), key=lambda item: item["_path"])
    return found


def is_candidate(obj: dict, path: Path) -> bool:
    """Whether an eval.json is of a sweep candidate (its run identity's ``sweep_candidate``, with the positive
    ``learning_rate`` it trained with)."""
    run = obj["run"]
    if not run.get("sweep_candidate"):
        return False
    lr = run.get("learning_rate")
    if not _finite(lr) or lr <= 0:
        _bad(path, "run.learning_rate", f"is {lr!r}: a sweep candidate's evaluation needs its positive learning rate")
    return True


# --- validation of what the report reads ------------------------------------------------------------------

BOUNDED = ("acc", "acc_norm", "exact_match")  # proportions: in [0, 1] (lm-eval reports some F1 scores in 0–100)


def _bounded(metric: str) -> bool:
    return metric.split(",")[0].split("/")[0] in BOUNDED


def _bad(path: Path, key: str, problem: str):
    raise SnrtuneError(f"{path}: {key} {problem}")


def _check_run(obj: dict, path: Path) -> None:
    run = obj["run"]
    if not isinstance(run, dict):
        _bad(path, "run", "must be an object with id and method")
    for key in ("id", "method"):
        if not isinstance(run.get(key), str) or not run[key]:
            _bad(path, f"run.{key}", "is missing or not a string")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


EVAL_STATUSES = ("finished", "diverged")  # eval.json "status"; absent (an older snrtune): finished


def validate_eval(obj: dict, path: Path) -> None:
    """One line naming the file and key for: a missing run field, an unknown status, scores in a diverged
    run's eval.json (it has none), a score that is not a number (null is
    allowed: not computed), an accuracy outside [0, 1], a non-finite or out-of-range per-example value."""
    _check_run(obj, path)
    if not isinstance(obj["results"], dict):
        _bad(path, "results", "must be an object of tasks")
    status = obj.get("status", "finished")
    if status not in EVAL_STATUSES:
        _bad(path, "status", f"is {status!r}: expected one of {', '.join(EVAL_STATUSES)}")
    if status == "diverged" and (obj["results"] or obj.get("per_example")):
        _bad(path, "results", "holds scores, but status is diverged (a diverged run is not evaluated)")
    for task, metrics in obj["results"].items():
        if not isinstance(metrics, dict):
            _bad(path, f"results.{task}", "must be an object of metrics")
        for metric, score in metrics.items():
            key = f"results.{task}.{metric}"
            if score is None:
                continue
            if not _finite(score):
                _bad(path, key, f"is {score!r}: expected a finite number")
            if not metric.endswith("_stderr") and _bounded(metric) and not 0 <= score <= 1:
                _bad(path, key, f"is {score!r}: a proportion must lie in [0, 1]")
    for task, data in (obj.get("per_example") or {}).items():
        for metric, entry in (data.get("metrics") or {}).items():
            key = f"per_example.{task}.metrics.{metric}.values"
            values = entry.get("values") if isinstance(entry, dict) else None
            flat = np.asarray(values if isinstance(values, list) else [None], dtype=object).ravel()
            if not all(_finite(v) for v in flat):
                _bad(path, key, "holds a value that is not a finite number")
            if len(flat) and _bounded(metric) and entry.get("aggregation") == "mean" and not (
                    0 <= min(flat) and max(flat) <= 1):
                _bad(path, key, "holds a value outside [0, 1] for a proportion")
            if len(values) != len(data.get("doc_ids") or []):
                _bad(path, key, f"has {len(values)} values for {len(data.get('doc_ids') or [])} doc_ids")


def validate_metrics(obj: dict, path: Path) -> None:
    _check_run(obj, path)
    for key in ("train_loss", "eval_loss"):
        points = obj.get(key) or []
        if not isinstance(points, list) or not all(isinstance(p, list) and len(p) == 2 for p in points):
            _bad(path, key, "must be a list of [step, loss] pairs")
        if any(p[1] is not None and not isinstance(p[1], (int, float)) for p in points):
            _bad(path, key, "holds a loss that is not a number (or null for a non-finite one)")


# selections and snr.json by their one loader's schema (snrtune.spectrum.selection_file)
VALIDATE = {"eval": validate_eval, "metrics": validate_metrics,
            "selection": selection_file.check_selection, "snr": selection_file.check_scan}
