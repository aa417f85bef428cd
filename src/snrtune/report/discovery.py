"""Finding and reading what the report reads: eval.json, metrics.json, snr.json and selection YAMLs, told apart
by their keys (docs/artifacts.md), never by their paths; each eval.json and metrics.json validated on reading
(one line naming the file and key). An eval.json whose run identity says ``sweep_candidate`` (a learning-rate
candidate merged with `snrtune merge --sweep-candidate`) goes under "candidate", never among the evaluations
the report ranks.

The report reads every file it finds or stops: a .json/.yaml file under RESULTS_DIR that does not parse (hidden
directories and files, such as .snakemake/ and a step's temporary files, are not searched), an eval.json of a run
whose id belongs to another model, two evaluations of one run and task with different scores, impossible values
(a negative standard error, a perplexity below 1, a missing run field, a step that is not an integer) and two
models whose names become one file name are each one line naming the file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from snrtune.artifact_names import METRICS_FILE
from snrtune.errors import SnrtuneError
from snrtune.fileio import parse_yaml
from snrtune.naming import model_slug
from snrtune.spectrum import selection_file


MAX_BYTES = 200 * 1024 * 1024


def kind_of(obj) -> str | None:
    """Which snrtune artifact a parsed file is, judged by its keys."""
    if not isinstance(obj, dict):
        return None
    if {"run", "results"} <= obj.keys():
        return "eval"
    if {"run", "train_loss", "trainable_params"} <= obj.keys():
        return "metrics"
    if {"modules", "parameters", "total_params"} <= obj.keys():
        return "snr"
    if {"unfrozen_parameters", "modules", "trainable_params"} <= obj.keys():
        return "selection"
    return None


def read_artifact(path: Path) -> tuple[str | None, dict | None]:
    """(kind, parsed content) of a file, (None, None) when it is no snrtune artifact (not .json/.yaml, larger than
    MAX_BYTES); a .json or .yaml file that does not parse is a one-line error naming it."""
    if path.suffix not in (".json", ".yaml", ".yml") or not path.is_file() or path.stat().st_size > MAX_BYTES:
        return None, None
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SnrtuneError(f"{path}: the report cannot read it: not UTF-8 (byte {exc.start}); expected every "
                           f".json/.yaml file under the results to parse (remove or fix it)") from None
    try:
        obj = json.loads(text) if path.suffix == ".json" else parse_yaml(text, str(path))
    except json.JSONDecodeError as exc:
        raise SnrtuneError(f"{path}: the report cannot read it: not valid JSON ({exc.msg} at line {exc.lineno} "
                           f"column {exc.colno}); expected every .json/.yaml file under the results to parse (a "
                           f"truncated eval.json? re-run its step)") from None
    except SnrtuneError as exc:
        raise SnrtuneError(f"the report cannot read it: {exc}") from None
    return kind_of(obj), obj


def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def discover(results_dir: Path) -> dict[str, list[dict]]:
    """Every artifact anywhere under ``results_dir`` but in hidden directories and files."""
    return collect(sorted(p for p in results_dir.rglob("*") if _visible(p, results_dir)), strict=False)


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
    for kind in ("eval", "candidate"):
        check_duplicate_scores(found[kind])
    check_model_slugs(found)
    # a copied file must not count as another seed; two eval files of one run on different tasks are both kept
    keys = {"eval": lambda item: (item["run"]["id"], tuple(sorted(item["results"]))),
            "candidate": lambda item: (item["run"]["id"], item["run"]["learning_rate"], tuple(sorted(item["results"]))),
            "metrics": lambda item: item["run"]["id"]}
    for kind, key in keys.items():
        unique = {key(item): item for item in reversed(found[kind])}
        found[kind] = sorted(unique.values(), key=lambda item: item["_path"])
    return found


def check_duplicate_scores(evals: list[dict]) -> None:
    """Two evaluations of one run (a sweep candidate: one learning rate) and task must agree: a copy is harmless,
    two different scores are two answers to one question (one line naming both files)."""
    seen: dict[tuple, dict] = {}
    for item in sorted(evals, key=lambda item: item["_path"]):
        for task, scores in item["results"].items():
            key = (item["run"]["id"], item["run"].get("learning_rate"), task)
            first = seen.setdefault(key, item)
            if first is not item and first["results"][task] != scores:
                raise SnrtuneError(f"{item['_path']}: run {key[0]!r} on task {task!r} scores {_scores(scores)}, but "
                                   f"{first['_path']} scores it {_scores(first['results'][task])}; expected one "
                                   f"evaluation per run and task (remove the stale one)")


def _scores(scores: dict) -> str:
    return ", ".join(f"{metric}={value:.4g}" if isinstance(value, (int, float)) else f"{metric}={value}"
                     for metric, value in scores.items() if not metric.endswith("_stderr")) or "nothing"


def check_model_slugs(found: dict[str, list[dict]]) -> None:
    """Two models whose names become one file name (the plots are named after the model) are refused."""
    by_slug: dict[str, tuple[str, str]] = {}
    for item in found["eval"] + found["metrics"]:
        model = item["run"]["model"]
        other = by_slug.setdefault(model_slug(model), (model, item["_path"]))
        if other[0] != model:
            raise SnrtuneError(f"{item['_path']}: model {model!r} and model {other[0]!r} ({other[1]}) share the file "
                               f"name {model_slug(model)!r}; expected model names that differ in letters, digits, "
                               f"'-', '.' or '_' (fetch --name)")


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
    """The run identity: id, model and method strings, the id the model's (``MODEL/…``), a seed and t of the
    right types."""
    run = obj["run"]
    if not isinstance(run, dict):
        _bad(path, "run", "must be an object with id, model and method")
    for key in ("id", "model", "method"):
        if not isinstance(run.get(key), str) or not run[key]:
            _bad(path, f"run.{key}", "is missing or not a string")
    if not run["id"].startswith(run["model"] + "/"):
        _bad(path, "run.id", f"is {run['id']!r}, a run of another model than run.model {run['model']!r}")
    if run.get("seed") is not None and type(run["seed"]) is not int:
        _bad(path, "run.seed", f"is {run['seed']!r}: expected an integer or null")
    if run.get("top_percent") is not None and not (_finite(run["top_percent"]) and 0 < run["top_percent"] <= 100):
        _bad(path, "run.top_percent", f"is {run['top_percent']!r}: expected a number in (0, 100] or null")


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
    evaluated = obj.get("evaluated_model")
    if evaluated is not None and evaluated != obj["run"]["model"]:
        _bad(path, "run.model", f"is {obj['run']['model']!r}, but the model evaluated is {evaluated!r} (evaluated_model): "
             f"an evaluation of another model's run")
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
            if metric.split(",")[0].endswith("_stderr") and score < 0:
                _bad(path, key, f"is {score!r}: a standard error cannot be negative")
            if "perplexity" in metric.split(",")[0].split("/")[0] and not metric.endswith("_stderr") and score < 1:
                _bad(path, key, f"is {score!r}: a perplexity is at least 1")
            if metric.split(",")[0].split("/")[0] == "bits_per_byte" and score < 0:
                _bad(path, key, f"is {score!r}: bits per byte cannot be negative")
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
        if any(type(p[0]) is not int for p in points):
            _bad(path, key, "holds a step that is not an integer")


# selections and snr.json by their one loader's schema (snrtune.spectrum.selection_file)
VALIDATE = {"eval": validate_eval, "metrics": validate_metrics,
            "selection": selection_file.check_selection, "snr": selection_file.check_scan}
