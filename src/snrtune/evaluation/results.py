"""What evaluate writes: the run identity, lm-eval's results tidied, per-example scores, eval.json and its samples file."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from snrtune.aggregation import corpus_metric
from snrtune.artifact_names import RUN_FILE
from snrtune.fileio import OWNER_KEY, Owner, atomic_file, mark_line, write_json
from snrtune.errors import SnrtuneError
from snrtune.model_dir import SOURCE_FILE, load_source_info, read_run_record

SAMPLES_SUFFIX = ".samples.jsonl"
OWNER = Owner("evaluate")


def evaluated_identity(model_dir: Path, run_json: str | None) -> tuple[dict, str]:
    """The run evaluated (from snrtune_run.json) or the base model (from snrtune_source.json)."""
    path = Path(run_json) if run_json else model_dir / RUN_FILE
    if run_json and not path.is_file():
        raise SnrtuneError(f"--run-json {run_json!r} does not exist")
    if path.is_file():
        run = read_run_record(path)
        if run_json and (model_dir / SOURCE_FILE).is_file() and run["model"] != load_source_info(model_dir)["name"]:
            raise SnrtuneError(f"--run-json {run_json!r} is run {run['id']!r} of model {run['model']!r}, but "
                               f"{str(model_dir)!r} is model {load_source_info(model_dir)['name']!r} (its "
                               f"{SOURCE_FILE}); expected the run record of the model evaluated")
        return run, run.get("model_form", "merged-full-precision")
    name = load_source_info(model_dir)["name"]
    return {"id": f"{name}/base", "model": name, "method": "base", "top_percent": None, "seed": None}, "base"


def _finite_or_none(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def tidy_results(raw: dict) -> tuple[dict, dict]:
    """lm-eval's ``{"acc,none": v, "acc_stderr,none": s}`` → ``{"acc": v, "acc_stderr": s}`` per task.

    A filter other than "none" stays in the metric name: ``exact_match,strict-match`` → ``exact_match/strict-match``.
    """
    results, higher = {}, {}
    for task, metrics in raw["results"].items():
        out = {}
        for key, value in metrics.items():
            if "," not in key:
                continue
            metric, _, filt = key.partition(",")
            stderr = metric.endswith("_stderr")
            base = metric[: -len("_stderr")] if stderr else metric
            name = base if filt == "none" else f"{base}/{filt}"
            out[name + ("_stderr" if stderr else "")] = _finite_or_none(value)
        results[task] = out
        hib = raw.get("higher_is_better", {}).get(task, {})
        higher[task] = {m: bool(v) for m, v in hib.items() if v is not None}
    return results, higher


def jsonable(obj: Any) -> Any:
    """Per-sample data as plain JSON (non-finite floats → null, other objects → str)."""
    text = json.dumps(obj, default=str, allow_nan=True)
    return json.loads(text, parse_constant=lambda _: None)


def _aggregations(values: list) -> tuple[str, ...]:
    """How per-example values could make the task score: a number → its mean; a (loglikelihood, count) pair →
    a corpus-level ratio (lm-eval's weighted_perplexity or bits_per_byte)."""
    if all(isinstance(v, (int, float)) for v in values):  # bools too (an exact match)
        return ("mean",)
    if all(isinstance(v, list) and len(v) == 2 and all(_finite_or_none(x) is not None for x in v) for v in values):
        return ("weighted_perplexity", "bits_per_byte")
    return ()


def _matches(values: list, aggregation: str, reported: float | None) -> bool:
    if reported is None or any(v is None for v in values):
        return False
    import numpy as np

    data = [float(v) for v in values] if aggregation == "mean" else values
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        mine = float(corpus_metric(data, aggregation, axis=0))
    return math.isfinite(mine) and math.isclose(mine, reported, rel_tol=1e-6, abs_tol=1e-9)


def per_example_scores(samples: dict, results: dict) -> dict:
    """lm-eval's logged samples, kept compactly: per task, the sorted ``doc_ids`` and, per metric, its
    ``aggregation`` and one ``values`` entry per doc id (a number, or a [loglikelihood, words|bytes] pair).

    A metric is kept only when its values reproduce the task score in ``results`` (the mean, or the corpus
    ratio for perplexities), so the report can recompute every score it bootstraps; other metrics (e.g. an
    F1 over the whole corpus) are left out and the report falls back to lm-eval's standard error.
    """
    out = {}
    for task, records in samples.items():
        by_metric: dict[str, dict[int, Any]] = {}
        for rec in records:
            filt = rec.get("filter", "none")
            for metric in rec.get("metrics", []):
                name = metric if filt == "none" else f"{metric}/{filt}"
                by_metric.setdefault(name, {})[int(rec["doc_id"])] = rec.get(metric)
        doc_ids = sorted({d for values in by_metric.values() for d in values})
        metrics = {}
        for name, values in by_metric.items():
            if sorted(values) != doc_ids:
                continue
            column = [values[d] for d in doc_ids]
            reported = results.get(task, {}).get(name)
            agg = next((a for a in _aggregations(column) if _matches(column, a, reported)), None)
            if agg:
                metrics[name] = {"aggregation": agg,
                                 "values": [float(v) for v in column] if agg == "mean" else column}
        if metrics:
            out[task] = {"doc_ids": doc_ids, "metrics": metrics}
    return out


def samples_path(out: str | os.PathLike) -> Path:
    """Where --log-samples puts lm-eval's full records: eval.json → eval.samples.jsonl."""
    out = Path(out)
    return out.with_name((out.name[: -len(out.suffix)] if out.suffix else out.name) + SAMPLES_SUFFIX)


def read_samples(path: str | os.PathLike) -> list[dict]:
    """The records of a .samples.jsonl file (write_eval), its first line (evaluate's mark) left out."""
    lines = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    return [line for line in lines if OWNER_KEY not in line]


def write_eval(out: str | os.PathLike, record: dict, force: bool = False) -> None:
    """eval.json (without the full samples) and, when the record has them, the .samples.jsonl sibling (a first
    line with evaluate's mark, then one line per task × document: {"task": …, lm-eval's record}); both atomically.
    ``force`` replaces an ``out`` this step did not write (never the samples file: it must be evaluate's own)."""
    record = dict(record)
    samples = record.pop("samples", None)
    if samples is not None:
        owner = OWNER.sibling(SAMPLES_SUFFIX)
        with atomic_file(samples_path(out), owner=owner) as handle:
            handle.write(mark_line(owner))
            for task, records in samples.items():
                for rec in records:
                    handle.write(json.dumps({"task": task, **rec}, allow_nan=False) + "\n")
    write_json(out, record, owner=OWNER, force=force)
