"""`snrtune report --files FILE… --out REPORT_DIR` (or `snrtune report RESULTS_DIR …`): tables, plots and one
HTML page over the runs.

The workflow passes exactly the files its current config produced (``--files``, ``--benchmark``); a user may
instead name a directory, searched recursively. Files are told apart by their content (docs/artifacts.md),
never by their paths: eval.json (run + results + config), metrics.json (run + train_loss + trainable_params;
a run directory stands for its metrics.json), snr.json (modules + parameters) and selection YAMLs
(unfrozen_parameters + modules). ``--benchmark RUN_ID=TSV`` adds a Snakemake benchmark of a training job.

Everything is per model: runs of different models are never pooled as if they were seeds. Scores get 95 %
confidence intervals and the target task's methods are compared pairwise on the same examples (snrtune.report.stats);
the verdict names a winner only when it is significantly ahead (docs/evaluation.md, "How the report decides").
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from snrtune import method_registry, naming
from snrtune.report import stats
from snrtune.artifact_names import COMPARISONS_TABLE, REPORT_PAGE, RUNS_TABLE, SCORES_TABLE, SUMMARY
from snrtune.artifacts import atomic_dir
from snrtune.report.cost import COST_COLUMNS, FAILED, compute_hours, peak_memory
from snrtune.errors import SnrtuneError
from snrtune.training.sweep import SWEEP_FILE

MAX_BYTES = 200 * 1024 * 1024
# The score the report ranks by, per task; other tasks use the first of FALLBACK they report.
PRIMARY = {"snrtune_toolcall": "acc", "snrtune_retention": "acc", "snrtune_ppl": "word_perplexity",
           "arc_challenge": "acc_norm", "hellaswag": "acc_norm", "mmlu": "acc", "truthfulqa_mc2": "acc",
           "winogrande": "acc", "gsm8k": "exact_match/strict-match"}
FALLBACK = ("acc_norm", "acc", "exact_match", "exact_match/strict-match", "f1", "word_perplexity")
DEFAULT_TARGET = "snrtune_toolcall"


def add_arguments(parser) -> None:
    parser.add_argument("results_dir", nargs="?", help="directory searched (recursively) for eval/metrics/snr/selection "
                        "files (instead of --files)")
    parser.add_argument("--files", nargs="+", default=None, metavar="FILE",
                        help="exactly these eval.json, metrics.json (or run directories), snr.json and selection files")
    parser.add_argument("--benchmark", action="append", default=[], metavar="RUN_ID=TSV",
                        help="Snakemake benchmark TSV of a training job, e.g. smollm2/full-s0=results/…/full-s0.tsv")
    parser.add_argument("--out", required=True, help="the report directory to write")
    parser.add_argument("--target-task", default=None,
                        help=f"the task fine-tuning aims at (default: {DEFAULT_TARGET} if evaluated, else the first task); "
                             "every other task counts as retention")
    parser.add_argument("--retention-tasks", type=_task_list, default=None, metavar="A,B",
                        help="the tasks that measure what fine-tuning may lose (default: every task but the target)")


def _task_list(text: str) -> list[str]:
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    if not tasks:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated task names")
    return tasks


# --- discovery --------------------------------------------------------------------------------------------

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
    found: dict[str, list[dict]] = {"eval": [], "metrics": [], "snr": [], "selection": []}
    for path in map(Path, paths):
        if strict and path.is_dir():
            path = path / "metrics.json"
        kind, obj = read_artifact(path)
        if kind:
            obj["_path"] = str(path)
            if kind in VALIDATE:
                VALIDATE[kind](obj, path)
            found[kind].append(obj)
        elif strict:
            raise SnrtuneError(f"--files: {str(path)!r} is not an eval.json, metrics.json, snr.json or selection "
                               f"file{'' if path.exists() else ' (it does not exist)'}")
    # a copied file must not count as another seed; two eval files of one run on different tasks are both kept
    keys = {"eval": lambda item: (item["run"]["id"], tuple(sorted(item["results"]))),
            "metrics": lambda item: item["run"]["id"]}
    for kind, key in keys.items():
        unique = {key(item): item for item in reversed(found[kind])}
        found[kind] = sorted(unique.values(), key=lambda item: item["_path"])
    return found


# --- validation of what the report reads ------------------------------------------------------------------

BOUNDED = ("acc", "acc_norm", "exact_match", "f1")  # metrics that are proportions: in [0, 1]


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


def validate_eval(obj: dict, path: Path) -> None:
    """One line naming the file and key for: a missing run field, a score that is not a number (null is
    allowed: not computed), an accuracy outside [0, 1], a non-finite or out-of-range per-example value."""
    _check_run(obj, path)
    if not isinstance(obj["results"], dict):
        _bad(path, "results", "must be an object of tasks")
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


VALIDATE = {"eval": validate_eval, "metrics": validate_metrics}


# --- run identity -----------------------------------------------------------------------------------------

CONTROLS = ("random", "lowest")  # selection controls: as many modules per type as the SNR selection


def selection_kind(run: dict, metrics: dict | None = None) -> str | None:
    """``snr``, ``random`` or ``lowest`` for a run that trains a selection (None otherwise): from the run
    identity's ``selection_kind``, the selection summary in metrics.json, the method registry's
    ``selection_kind``, or a method named like ``spectrum-random``."""
    kind = run.get("selection_kind") or ((metrics or {}).get("selection") or {}).get("selection")
    spec = method_registry.find(run["method"])
    if not kind and spec is not None and spec.selection_kind in CONTROLS:
        kind = spec.selection_kind
    if not kind:
        kind = next((c for c in CONTROLS if run["method"].endswith("-" + c)), None)
    if not kind and run.get("top_percent") is not None:
        kind = "snr"
    return kind


def variant_of(run: dict, kind: str | None = None) -> str:
    """The method as compared in the report: ``spectrum-t25``, ``spectrum-random-t25``, ``lora``, ``base``
    (naming.variant_of, with a control's kind after the method label when its method name does not say it)."""
    label = naming.variant_of({**run, "top_percent": None})
    if kind in CONTROLS and not label.endswith("-" + kind):
        label = f"{label}-{kind}"
    t = run.get("top_percent")
    return f"{label}-t{naming.format_t(t)}" if t is not None else label


def snr_counterpart(variant: str) -> str | None:
    """``spectrum-random-t25`` → ``spectrum-t25``: the SNR selection a control mirrors."""
    for kind in CONTROLS:
        if f"-{kind}-t" in variant or variant.endswith(f"-{kind}"):
            return variant.replace(f"-{kind}", "", 1)
    return None


LEARN_MARGIN = 2.5  # the drop must exceed this many standard errors of a difference of two medians


def _losses(metrics: dict, key: str) -> list:
    return [loss for _, loss in metrics.get(key) or []]


def _robust_drop(values: list[float]) -> bool | None:
    """First vs last quarter (q = max(1, n // 4) values each) of a loss curve: True when the median of the
    last quarter is below the median of the first by more than LEARN_MARGIN × 1.2533 σ √(2/q), the standard
    error of a difference of two medians of q values, with the step-to-step noise σ = 1.4826 × median |Δloss| / √2
    (robust to the trend and to spikes). A flat noisy curve does not pass, a late spike does not move a median;
    None with fewer than 4 values."""
    if len(values) < 4:
        return None
    q = max(1, len(values) // 4)
    arr = np.asarray(values)
    noise = 1.4826 * float(np.median(np.abs(np.diff(arr)))) / math.sqrt(2)
    drop = float(np.median(arr[:q]) - np.median(arr[-q:]))
    return drop > LEARN_MARGIN * 1.2533 * noise * math.sqrt(2 / q)


def run_status(metrics: dict) -> str | None:
    """``diverged`` (metrics.json ``"status": "diverged"`` or a non-finite — null — training or evaluation
    loss), ``did not learn``, ``learned``, or None (too few losses to tell). Learning is judged on the training
    loss (the objective the run optimises); when fewer than 4 training losses were logged, on the eval loss."""
    train, evals = _losses(metrics, "train_loss"), _losses(metrics, "eval_loss")
    if metrics.get("status") == "diverged" or any(v is None or not math.isfinite(v) for v in train + evals):
        return "diverged"
    drop = _robust_drop([float(v) for v in train])
    if drop is None:
        drop = _robust_drop([float(v) for v in evals])
    return None if drop is None else "learned" if drop else "did not learn"


def budget_of(metrics: dict) -> tuple[float | None, float | None]:
    """(examples per optimizer step, max steps) from metrics.json ``budget``; (None, None) when absent."""
    budget = metrics.get("budget") or {}
    return budget.get("examples_per_step"), budget.get("max_steps")


# --- tables -----------------------------------------------------------------------------------------------

def primary_metric(task: str, metrics: set[str]) -> str | None:
    if PRIMARY.get(task) in metrics:
        return PRIMARY[task]
    return next((m for m in FALLBACK if m in metrics), min(metrics) if metrics else None)


def summary_tasks(evals: list[dict]) -> list[str]:
    """Requested tasks (and the members of requested tags), not the subtasks of a requested group."""
    out: list[str] = []
    for ev in evals:
        requested, present = ev["config"].get("tasks", []), list(ev["results"])
        chosen = [t for t in present if t in requested]
        if any(t not in present for t in requested):  # a tag: its tasks are in the results
            chosen += [t for t in present if t not in chosen and not any(t.startswith(c + "_") for c in chosen)]
        out += [t for t in chosen if t not in out]
    return out


def read_benchmarks(specs: list[str]) -> dict[str, dict]:
    """{run id: first row of its Snakemake benchmark TSV} from ``RUN_ID=TSV`` strings."""
    out = {}
    for spec in specs:
        run_id, sep, path = spec.rpartition("=")
        if not sep or not run_id:
            raise SnrtuneError(f"--benchmark {spec!r}: expected RUN_ID=TSV")
        try:
            frame = pd.read_csv(path, sep="\t")
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise SnrtuneError(f"--benchmark {spec!r}: cannot read {path!r} ({type(exc).__name__})") from None
        if frame.empty or "s" not in frame:
            raise SnrtuneError(f"--benchmark {spec!r}: {path!r} is not a Snakemake benchmark TSV")
        out[run_id] = {k: (None if pd.isna(v) else v) for k, v in frame.iloc[0].items()}
    return out


def runs_table(found: dict[str, list[dict]], benchmarks: dict[str, dict] | None = None) -> pd.DataFrame:
    """One row per run × task × metric, with the run's training cost, status and budget (a task that two eval
    files of one run both hold counts once)."""
    costs = {m["run"]["id"]: m for m in found["metrics"]}
    benchmarks = benchmarks or {}
    rows, seen = [], set()
    for ev in found["eval"]:
        run, cost = ev["run"], costs.get(ev["run"]["id"], {})
        kind = selection_kind(run, cost)
        status = run_status(cost) if cost else None
        examples_per_step, max_steps = budget_of(cost)
        for task, metrics in ev["results"].items():
            if (run["id"], task) in seen:
                continue
            seen.add((run["id"], task))
            for metric, score in metrics.items():
                if metric.endswith("_stderr"):
                    continue
                rows.append({
                    "run": run["id"], "model": run.get("model"), "method": run["method"],
                    "variant": variant_of(run, kind), "selection_kind": kind,
                    "t": run.get("top_percent"), "seed": run.get("seed"), "task": task, "metric": metric,
                    "score": score, "stderr": metrics.get(metric + "_stderr"),
                    "higher_is_better": ev.get("higher_is_better", {}).get(task, {}).get(
                        metric, "perplexity" not in metric and "bits_per" not in metric),
                    "status": status, "learned": None if status is None else status == "learned",
                    "examples_per_step": examples_per_step, "max_steps": max_steps,
                    "trainable_params": cost.get("trainable_params"), "total_params": cost.get("total_params"),
                    "peak_memory_bytes": cost.get("peak_memory_bytes"), "train_wall_time_s": cost.get("wall_time_s"),
                    "gpu_seconds": cost.get("gpu_seconds"), "cpu_seconds": cost.get("cpu_seconds"),
                    "peak_allocated_bytes": cost.get("peak_allocated_bytes"),
                    "peak_reserved_bytes": cost.get("peak_reserved_bytes"),
                    "job_wall_s": benchmarks.get(run["id"], {}).get("s"),
                    "job_max_rss_mb": benchmarks.get(run["id"], {}).get("max_rss"),
                    "tokens_per_s": cost.get("tokens_per_s"), "eval_wall_time_s": ev.get("wall_time_s"),
                    "model_form": ev.get("model_form"),
                })
    return pd.DataFrame(rows)


def per_example_index(evals: list[dict]) -> dict[tuple[str, str, str], tuple[list[int], list, str]]:
    """(run id, task, metric) → (doc ids, per-example values, aggregation) from eval.json's ``per_example``."""
    index = {}
    for ev in evals:
        for task, data in (ev.get("per_example") or {}).items():
            for metric, entry in data.get("metrics", {}).items():
                index[(ev["run"]["id"], task, metric)] = (data["doc_ids"], entry["values"], entry["aggregation"])
    return index


def primary_scores(runs: pd.DataFrame, tasks: list[str]) -> pd.DataFrame:
    """Rows of ``runs`` for each summary task's primary metric."""
    keep = []
    for task in tasks:
        metric = primary_metric(task, set(runs.loc[runs.task == task, "metric"]))
        keep.append(runs[(runs.task == task) & (runs.metric == metric)])
    return pd.concat(keep) if keep else runs.iloc[:0]


def seed_matrix(index: dict, run_ids: list[str], task: str, metric: str,
                docs: list[int] | None = None) -> tuple[np.ndarray, str, list[int]] | None:
    """Per-example values of several runs on their common documents: (array runs × docs[ × 2], aggregation,
    doc ids); None when a run has no per-example scores."""
    entries = [index.get((rid, task, metric)) for rid in run_ids]
    if not entries or any(e is None for e in entries) or len({e[2] for e in entries}) != 1:
        return None
    common = set(entries[0][0]) if docs is None else set(docs)
    for doc_ids, _, _ in entries:
        common &= set(doc_ids)
    common = sorted(common)
    if not common:
        return None
    rows = []
    for doc_ids, values, _ in entries:
        where = {d: i for i, d in enumerate(doc_ids)}
        rows.append([values[where[d]] for d in common])
    return np.asarray(rows, dtype=float), entries[0][2], common


def status_of(values: pd.Series) -> str | None:
    """A variant's status over its seeds: diverged when any seed diverged, else did not learn when any seed did
    not learn, else learned when every known seed learned (unknown seeds do not count against it)."""
    known = {v for v in values if isinstance(v, str)}
    for status in (*FAILED, "learned"):
        if status in known:
            return status
    return None


def _budget(values: pd.Series) -> str | None:
    known = sorted({float(v) for v in values if v is not None and not pd.isna(v)})
    return None if not known else "/".join(f"{v:g}" for v in known)


def aggregate(scores: pd.DataFrame, index: dict) -> pd.DataFrame:
    """Per model × variant × task: the mean over seeds with a 95 % interval (snrtune.report.stats.interval: a
    seed-aware Wilson interval for 0/1 scores, else the crossed-design t interval) when every seed has
    per-example scores; else the mean ± 1.96 × the standard error over seeds (several seeds) or ± 1.96 ×
    lm-eval's standard error (one seed); ``ci_method`` says which. Models are never pooled."""
    rows = []
    for (model, variant, task), group in scores.groupby(["model", "variant", "task"], sort=False, dropna=False):
        group = group[group["score"].notna()]
        if group.empty:
            continue
        metric, n = group["metric"].iloc[0], len(group)
        status = status_of(group["status"])
        row = {"model": model, "variant": variant, "task": task, "metric": metric,
               "higher_is_better": bool(group["higher_is_better"].iloc[0]), "score": group["score"].mean(),
               "n_seeds": n, "n_examples": None, "status": status,
               "learned": None if status is None else status == "learned",
               "examples_per_step": _budget(group["examples_per_step"]), "max_steps": _budget(group["max_steps"]),
               "ci_low": math.nan, "ci_high": math.nan, "ci_method": None}
        data = seed_matrix(index, list(group["run"]), task, metric)
        if data is not None:
            ci = stats.interval(data[0], data[1])
            row.update(ci_low=ci.low, ci_high=ci.high, ci_method=ci.method, n_examples=len(data[2]))
        elif n > 1:
            se = group["score"].std(ddof=1) / math.sqrt(n)
            low, high = stats.normal_interval(row["score"], se)
            row.update(ci_low=low, ci_high=high, ci_method="normal over seeds")
        elif pd.notna(group["stderr"].iloc[0]):
            low, high = stats.normal_interval(row["score"], float(group["stderr"].iloc[0]))
            row.update(ci_low=low, ci_high=high, ci_method="lm-eval stderr")
        rows.append(row)
    out = pd.DataFrame(rows)
    base = out[out.variant == "base"].set_index(["model", "task"])["score"]
    out["delta_vs_base"] = [base.get((m, t), math.nan) for m, t in zip(out["model"], out["task"])]
    out["delta_vs_base"] = out["score"] - out["delta_vs_base"]
    return out


def costs(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean training cost per model × variant (compute_hours: GPU-hours, or CPU-hours when no run used a GPU)."""
    cols = [c for c in COST_COLUMNS if c in runs]
    per_run = runs.drop_duplicates("run")
    out = per_run.groupby(["model", "variant"], sort=False, dropna=False)[cols].mean()
    out["compute_hours"], _ = compute_hours(out)
    return out


def variant_order(variants) -> list[str]:
    """base first, then alphabetical (a control right after the selection it mirrors)."""
    return sorted(set(variants), key=lambda v: (v != "base", snr_counterpart(v) or v, v))


# --- paired comparisons -----------------------------------------------------------------------------------

RANKING, GAIN = "ranking", "gain and retention"


def paired_runs(scores: pd.DataFrame, a: str, b: str) -> tuple[list[str], list[str]] | None:
    """Run ids of variants a and b paired by seed (their common seeds); when one side has a single run (the base
    model has no seed), it is paired with every run of the other; None when they cannot be paired."""
    ra = dict(zip(scores.loc[scores.variant == a, "seed"], scores.loc[scores.variant == a, "run"]))
    rb = dict(zip(scores.loc[scores.variant == b, "seed"], scores.loc[scores.variant == b, "run"]))
    common = [s for s in ra if s in rb]
    if common:
        return [ra[s] for s in common], [rb[s] for s in common]
    if len(rb) == 1:  # e.g. the base model (no seed): every seed of a against it
        return list(ra.values()), list(rb.values()) * len(ra)
    if len(ra) == 1:
        return list(ra.values()) * len(rb), list(rb.values())
    return None


def contenders(agg_model: pd.DataFrame) -> list[str]:
    """Trained variants that may be ranked: not the base model, not failed (diverged, did not learn)."""
    return [v for v, s in zip(agg_model["variant"], agg_model["status"]) if v != "base" and s not in FAILED]


def ranking_scores(scores: pd.DataFrame, names: list[str]) -> pd.Series:
    """Each contender's mean score over the seeds every contender has (the seeds the paired tests use); over
    all its seeds when the contenders share none."""
    sub = scores[scores.variant.isin(names)]
    seeds = [set(sub.loc[sub.variant == v, "seed"]) for v in names]
    common = set.intersection(*seeds) if seeds else set()
    if common:
        sub = sub[sub.seed.isin(common)]
    return sub.groupby("variant")["score"].mean().reindex(names)


def comparison_pairs(agg_model: pd.DataFrame, best: str | None) -> list[tuple[str, str, str]]:
    """The pre-declared ranking family on one model's target task: the best contender against every other
    contender, every trained method against full fine-tuning, each control against its SNR selection."""
    variants = [v for v in agg_model["variant"] if v != "base"]
    pairs: dict[frozenset, tuple[str, str, str]] = {}

    def add(a, b, why):
        key = frozenset((a, b))
        if a != b and key not in pairs:
            pairs[key] = (a, b, why)
        elif a != b and why not in pairs[key][2]:
            pairs[key] = (*pairs[key][:2], pairs[key][2] + ", " + why)

    if best is not None:
        for v in contenders(agg_model):
            add(best, v, "best vs other")
    if "full" in variants:
        for v in variants:
            add(v, "full", "vs full")
    for v in variants:
        counterpart = snr_counterpart(v)
        if counterpart in variants:
            add(counterpart, v, "SNR vs control")
    return list(pairs.values())


def _compare(scores: pd.DataFrame, index: dict, task: str, metric: str, a: str, b: str) -> dict:
    """One paired comparison's row (without Holm): the crossed-design test on the common seeds and examples,
    else only the difference of the means (untested)."""
    row = {"difference": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan,
           "n_examples": None, "n_seeds": None, "result": None}
    paired = paired_runs(scores, a, b)
    da = db = None
    if paired:
        da = seed_matrix(index, paired[0], task, metric)
        db = seed_matrix(index, paired[1], task, metric, docs=da[2] if da else None)
        if da is not None and db is not None and da[2] != db[2]:
            da = seed_matrix(index, paired[0], task, metric, docs=db[2])
    if da is not None and db is not None:
        result = stats.compare(da[0], db[0], da[1])
        row.update(difference=result.difference, ci_low=result.low, ci_high=result.high, p_value=result.p_value,
                   n_examples=result.n_examples, n_seeds=result.n_seeds, result=result)
    else:
        means = scores.groupby("variant")["score"].mean()
        row["difference"] = means[a] - means[b]
    return row


def _holm(family: list[dict]) -> None:
    """Holm over one family; power and examples needed at α/m, the level Holm's first step uses."""
    tested = [r for r in family if not math.isnan(r["p_value"])]
    level = stats.ALPHA / max(1, len(tested))
    for r, adjusted in zip(tested, stats.holm([r["p_value"] for r in tested]) if tested else []):
        r["p_holm"] = float(adjusted)
    for r in family:
        r.setdefault("p_holm", math.nan)
        r["significant"] = bool(r["p_holm"] < stats.ALPHA) if not math.isnan(r["p_holm"]) else None
        result = r.pop("result")
        r["family_size"], r["level"] = len(tested), level
        r["power"] = result.power(level) if result else math.nan
        r["examples_needed"] = result.examples_needed(level) if result else math.nan


def comparisons(scores: pd.DataFrame, agg: pd.DataFrame, index: dict, target: str,
                retention: list[str]) -> pd.DataFrame:
    """Per model, two Holm families. ``ranking`` (target task): best contender vs each other contender, each
    method vs full, each control vs its SNR selection. ``gain and retention``: each trained method against the
    base model on the target task and on every retention task. Per row: difference (variant − reference, in the
    metric's units), its 95 % interval, the p-value, Holm-adjusted within the family, the power at the observed
    difference and the examples per seed for power 0.8, both at α/m."""
    rows = []
    for model, agg_model in agg.groupby("model", sort=False, dropna=False):
        here = scores[scores.model == model]
        on_target = agg_model[agg_model.task == target]
        if on_target.empty:
            continue
        metric = on_target["metric"].iloc[0]
        names = contenders(on_target)
        best = None
        if names:
            ranked = ranking_scores(here[here.task == target], names)
            best = ranked.idxmax() if bool(on_target["higher_is_better"].iloc[0]) else ranked.idxmin()
        families = {RANKING: [(target, a, b, why) for a, b, why in comparison_pairs(on_target, best)], GAIN: []}
        if "base" in set(on_target.variant):
            for task in [target, *retention]:
                t = agg_model[agg_model.task == task]
                if "base" in set(t.variant):
                    families[GAIN] += [(task, v, "base", "target gain" if task == target else "retention change")
                                       for v in t.variant if v != "base"]
        for family, pairs in families.items():
            done = []
            for task, a, b, why in pairs:
                task_metric = metric if task == target else agg_model.loc[agg_model.task == task, "metric"].iloc[0]
                sub = here[here.task == task]
                done.append({"model": model, "task": task, "metric": task_metric, "family": family, "variant": a,
                             "reference": b, "why": why, "best": a == best and why.startswith("best"),
                             **_compare(sub, index, task, task_metric, a, b)})
            _holm(done)
            rows += done
    columns = ["model", "task", "metric", "family", "variant", "reference", "why", "best", "difference", "ci_low",
               "ci_high", "p_value", "p_holm", "significant", "n_examples", "n_seeds", "family_size", "level",
               "power", "examples_needed"]
    return pd.DataFrame(rows, columns=columns)


# --- formatting -------------------------------------------------------------------------------------------

def _fmt(value: float, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if abs(value) >= 10:
        digits = 1 if abs(value) >= 100 else 2
    small = 0 < abs(value) < 0.5 * 10 ** -digits
    return f"{value:.{digits}g}" if abs(value) >= 1000 or small else f"{value:.{digits}f}"


def _human(n: float) -> str:
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "–"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


def _p(p: float) -> str:
    if p is None or math.isnan(p):
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _needed(n: float) -> str:
    if n is None or math.isnan(n):
        return "–"
    return "∞ (more examples alone do not suffice)" if math.isinf(n) else f"~{math.ceil(n):,}"


CI_MARK = {"wilson": "", "t": "", "t (delta method)": "", "normal over seeds": "*", "lm-eval stderr": "†", None: ""}
SETTINGS_NOTE = ("Training settings per run: the learning rate and LoRA rank/alpha are each method's own (LoRA scale = "
                 "alpha/r, or alpha/sqrt(r) with rsLoRA); steps, examples per step and sequence length are held "
                 "equal.")
COMPARISON_NOTE = ("Paired comparisons (difference = method − against, on the same examples and seeds; t-test of the "
                   "crossed seeds × examples model; Holm within each family: 'ranking' on the target task = best vs "
                   "each, each vs full, each control vs its SNR selection; 'gain and retention' = each method vs the "
                   "base model on the target and retention tasks). Power and examples per seed for power 0.8 are at "
                   "α/m, the level of Holm's first step.")
SWEEP_NOTE = ("Learning-rate sweep: every candidate trained on the same data and budget; the one with the lowest "
              "final held-out validation loss (never a test score) was merged and evaluated (✓).")
CI_NOTE = ("Scores: mean over seeds [95% interval], change against the base model in parentheses; best value per "
           "column in bold among the methods that may be ranked. Intervals from the per-example scores treat seeds × "
           "examples as a crossed design (seed-to-seed spread and the shared examples both count): Wilson at the "
           "effective number of examples for 0/1 scores, else a t interval (perplexity: delta method on the log "
           "scale); * mean ± 1.96 × standard error over seeds, † ± 1.96 × lm-eval's standard error (no per-example "
           "scores: evaluate with --log-samples). A method marked 'did not learn' did not lower its own training loss "
           "(median of the last quarter against the first), 'diverged' had a non-finite loss; neither is ranked.")


def variant_label(row) -> str:
    return f"{row.variant} ({row.status})" if row.status in FAILED else row.variant


def summary_frame(agg: pd.DataFrame, cost: pd.DataFrame, tasks: list[str]) -> tuple[pd.DataFrame, dict]:
    """One model's method × task table as strings, plus which cell is best per column."""
    order = variant_order(agg.variant)
    labels = {r.variant: variant_label(r) for r in agg.drop_duplicates("variant").itertuples()}
    table, best = pd.DataFrame(index=order), {}
    for task in tasks:
        sub = agg[agg.task == task].set_index("variant")
        if sub.empty:
            continue
        hib, metric = bool(sub["higher_is_better"].iloc[0]), sub["metric"].iloc[0]
        col = f"{task} ({metric} {'↑' if hib else '↓'})"
        cells = {}
        for v in order:
            if v not in sub.index:
                cells[v] = "–"
                continue
            r = sub.loc[v]
            cell = _fmt(r.score)
            if not math.isnan(r.ci_low):
                cell += f" [{_fmt(r.ci_low)}, {_fmt(r.ci_high)}]{CI_MARK[r.ci_method]}"
            if v != "base" and not math.isnan(r.delta_vs_base):
                cell += f" ({r.delta_vs_base:+.3g})"
            cells[v] = cell
        table[col] = pd.Series(cells)
        ranked = sub[(sub.index != "base") & ~sub["status"].isin(FAILED)]
        if not ranked.empty:
            best[col] = ranked["score"].idxmax() if hib else ranked["score"].idxmin()
    names = {"trainable_params": "trainable params ↓", "peak_memory_bytes": "peak memory ↓",
             "train_wall_time_s": "train time ↓", "compute_hours": compute_hours(cost)[1].split(" (")[0] + " ↓",
             "tokens_per_s": "tokens/s ↑"}
    for key, col in names.items():
        values = cost[key].reindex(order) if key in cost else pd.Series(index=order, dtype=float)
        fmt = {"peak_memory_bytes": lambda x: _human(x) + "B", "train_wall_time_s": lambda x: f"{x:.0f} s",
               "compute_hours": lambda x: f"{x:.3g}",
               "tokens_per_s": lambda x: f"{x:.0f}"}.get(key, _human)
        table[col] = [fmt(x) if pd.notna(x) else "–" for x in values]
        trained = values.drop("base", errors="ignore").dropna()
        if not trained.empty:
            best[col] = trained.idxmax() if key == "tokens_per_s" else trained.idxmin()
    table.index = [labels.get(v, v) for v in order]
    best = {col: labels.get(v, v) for col, v in best.items()}
    return table, best


def comparison_frame(comp: pd.DataFrame) -> pd.DataFrame:
    """One model's comparisons as strings: significant, or inconclusive with the power at the observed
    difference and the examples per seed for power 0.8 (both at α/m, Holm's first level)."""
    rows = []
    for r in comp.itertuples():
        ci = f" [{_fmt(r.ci_low)}, {_fmt(r.ci_high)}]" if not math.isnan(r.ci_low) else " (untested)"
        outcome = "–" if r.significant is None else "significant" if r.significant else "inconclusive"
        rows.append({"method": r.variant, "against": r.reference, "task": r.task, "family": r.family, "why": r.why,
                     "difference [95% CI]": f"{r.difference:+.3g}{ci}", "p": _p(r.p_value),
                     "Holm p": _p(r.p_holm), "at α=0.05": outcome,
                     "power at observed": "–" if r.significant is not False else f"{r.power:.2f}",
                     "examples to separate": "–" if r.significant is not False else _needed(r.examples_needed)})
    return pd.DataFrame(rows)


def markdown_table(table: pd.DataFrame, best: dict, first: str = "method") -> str:
    head = [first] + list(table.columns)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, row in table.iterrows():
        cells = [f"**{row[c]}**" if best.get(c) == label else str(row[c]) for c in table.columns]
        lines.append("| " + " | ".join([str(label)] + cells) + " |")
    return "\n".join(lines)


def comparison_markdown(frame: pd.DataFrame) -> str:
    if frame.empty:
        return ""
    return markdown_table(frame.set_index("method"), {})


# --- verdict ----------------------------------------------------------------------------------------------

def pick_target(tasks: list[str], requested: str | None) -> str:
    if requested:
        if requested not in tasks:
            raise SnrtuneError(f"--target-task {requested!r} was not evaluated; expected one of {', '.join(tasks)}")
        return requested
    return DEFAULT_TARGET if DEFAULT_TARGET in tasks else tasks[0]


def pick_retention(tasks: list[str], target: str, requested: list[str] | None) -> list[str]:
    """The retention tasks: ``--retention-tasks`` (each evaluated, none the target), else every other task."""
    if requested is None:
        return [t for t in tasks if t != target]
    for task in requested:
        if task == target:
            raise SnrtuneError(f"--retention-tasks {task!r} is the target task; expected other tasks")
        if task not in tasks:
            raise SnrtuneError(f"--retention-tasks {task!r} was not evaluated; expected some of {', '.join(tasks)}")
    return list(dict.fromkeys(requested))


def _interval(r) -> str:
    return f"{_fmt(r.score)} [{_fmt(r.ci_low)}, {_fmt(r.ci_high)}]" if not math.isnan(r.ci_low) else _fmt(r.score)


def _diff(r) -> str:
    ci = f" [{_fmt(r.ci_low)}, {_fmt(r.ci_high)}]" if not math.isnan(r.ci_low) else " (untested)"
    return f"{r.difference:+.3g}{ci}" + (f", Holm p {_p(r.p_holm)}" if not math.isnan(r.p_holm) else "")


def _budgets_differ(trained: pd.DataFrame) -> str | None:
    """A sentence when the runs to rank were trained with different examples per step or steps (unknown —
    metrics.json without ``budget`` — is not a difference)."""
    parts = []
    for key, label in (("examples_per_step", "examples per step"), ("max_steps", "steps")):
        known = trained[key].dropna()
        if known.nunique() > 1 or any("/" in str(v) for v in known):
            parts.append(f"{label}: " + ", ".join(f"{v} {known[v]}" for v in known.index))
    if not parts:
        return None
    return (f"The runs were trained with different budgets ({'; '.join(parts)}), so no method is ranked: an "
            "equal number of examples per step and steps is the premise of the comparison.")


def _cheapest(names: list[str], cost: pd.DataFrame) -> str:
    """Among ``names``, the cheapest in peak memory and in GPU-hours (CPU-hours on a CPU)."""
    if cost.empty:
        return ""
    memory, memory_label = peak_memory(cost)
    hours, hours_label = compute_hours(cost)
    said = []
    for series, label, fmt in ((memory, memory_label, lambda x: _human(x) + "B"),
                               (hours, hours_label.split(" (")[0], lambda x: f"{x:.3g}")):
        values = series.reindex(names).dropna()
        if not values.empty:
            said.append(f"in {label} {values.idxmin()} ({fmt(values.min())})")
    return f" Cheapest among them: {'; '.join(said)}." if said else ""


def _retention_word(r, hib: bool) -> str:
    if not r.significant:
        return "no significant change" if r.significant is False else "untested"
    return "gained" if (r.difference > 0) == hib else "lost"


def verdict(agg: pd.DataFrame, comp: pd.DataFrame, cost: pd.DataFrame, target: str, tasks: list[str],
            retention: list[str] | None = None) -> str:
    """One model's verdict (docs/evaluation.md, "How the report decides"): a winner only when every paired
    difference in the ranking family favours it and is significant after Holm, no budget differs and no
    excluded (failed) method scores higher; the cheapest methods not significantly worse than the best; each
    method's target gain and retention change against the base model."""
    retention = [t for t in tasks if t != target] if retention is None else retention
    sub = agg[agg.task == target].set_index("variant")
    trained = sub.drop("base", errors="ignore")
    if trained.empty:
        return f"Only the base model was evaluated; no fine-tuning method to compare on {target}."
    hib, metric = bool(sub["higher_is_better"].iloc[0]), sub["metric"].iloc[0]
    failed = trained[trained["status"].isin(FAILED)]
    ok = trained.drop(failed.index)
    parts = []
    if failed.shape[0]:
        parts.append("Not ranked: " + ", ".join(f"{v} ({r.status})" for v, r in failed.iterrows()) + ". ")
    if ok.empty:
        return "".join(parts) + "No method can be ranked on this model."
    ranking = comp[comp.family == RANKING]
    best_rows = ranking[ranking["best"].astype(bool)]
    top = best_rows["variant"].iloc[0] if not best_rows.empty else ok.index[0]
    w = ok.loc[top]
    score = f"{target} ({metric}) {_interval(w)}"
    seeds = int(ranking["n_seeds"].dropna().max()) if ranking["n_seeds"].notna().any() else int(ok["n_seeds"].max())
    one_seed = seeds <= 1
    if one_seed:
        parts.append("One seed per method: these results compare single checkpoints; seed-to-seed spread is not "
                     "measured, so a difference is a claim about these runs, not about the methods. ")
    holm_note = (f"paired tests on the same examples{'' if one_seed else ' and seeds'}, Holm over the "
                 f"{int(best_rows['family_size'].iloc[0]) if not best_rows.empty else len(ranking)} comparisons of "
                 f"the ranking family: best vs each, each vs full, each control vs its SNR selection")
    budgets = _budgets_differ(ok)
    beaten_by_failed = [v for v, r in failed.iterrows() if (r.score > w.score) == hib and r.score != w.score]
    others = [v for v in ok.index if v != top]
    not_worse = [top]
    withheld = (f"but {', '.join(beaten_by_failed)} (not ranked) scored higher, so the claim is withheld."
                if beaten_by_failed else "")
    if budgets:
        parts.append(budgets)
    elif not others and withheld:
        parts.append(f"No winner on {target}: {top} is the only method that can be ranked, {withheld}")
    elif not others:
        parts.append(f"**{top}** is the only method that can be ranked; {score} (no other method to compare with).")
    elif best_rows.empty or best_rows["p_holm"].isna().any() or len(best_rows) < len(others):
        parts.append(f"{top} has the best {score}, but without per-example scores for every method the "
                     "differences are not tested, so no winner is named (evaluate with --log-samples).")
    else:
        wrong_sign = best_rows[(best_rows["difference"] > 0) != hib]
        inconclusive = best_rows[~best_rows["significant"].astype(bool)]
        not_worse += [r.reference for r in best_rows.itertuples() if not r.significant or (r.difference > 0) != hib]
        if not wrong_sign.empty:
            parts.append(f"No winner on {target}: {top} ranks first but its paired difference is not in its favour "
                         "against " + ", ".join(f"{r.reference} ({_diff(r)})" for r in wrong_sign.itertuples()) + ".")
        elif not inconclusive.empty:
            need = ", ".join(f"{r.reference}: {_needed(r.examples_needed)} (power now {r.power:.2f})"
                             for r in inconclusive.itertuples())
            parts.append(f"No winner on {target}: {top} has the best {metric} ({_interval(w)}) but the comparison is "
                         f"inconclusive against {', '.join(inconclusive['reference'])} ("
                         + "; ".join(f"{r.reference} {_diff(r)}" for r in inconclusive.itertuples())
                         + f"; {holm_note}). Examples per seed for power 0.8 at the observed difference (two-sided, "
                         f"α/m = {_p(inconclusive['level'].iloc[0])}): {need}; more seeds narrow the interval too.")
        elif withheld:
            parts.append(f"No winner on {target}: {top} is significantly ahead of every method that can be ranked, "
                         f"{withheld}")
        else:
            lead = "scored highest of these checkpoints" if one_seed else "wins"
            parts.append(f"**{top}** {lead} on {score}: significantly ahead of {', '.join(others)} "
                         f"(largest Holm p {_p(best_rows['p_holm'].max())}; {holm_note}).")
    if not budgets and others and not best_rows.empty and not best_rows["p_holm"].isna().any():
        names = [v for v in ok.index if v in not_worse]
        parts.append(f" Not significantly worse than {top} on {target}: {', '.join(names)}." + _cheapest(names, cost))
    full = ranking[(ranking.reference == "full") & (ranking.variant == top)]
    if not full.empty and top != "full":
        parts.append(f" Against full fine-tuning: {top} − full = {_diff(full.iloc[0])}.")
    for r in ranking[ranking.why.str.contains("SNR vs control")].itertuples():
        snr_first = snr_counterpart(r.reference) == r.variant
        snr, control = (r.variant, r.reference) if snr_first else (r.reference, r.variant)
        snr_ahead = ((r.difference > 0) == hib) == snr_first
        outcome = ("untested: no per-example scores" if r.significant is None
                   else "inconclusive" if not r.significant
                   else "the SNR selection is significantly better" if snr_ahead
                   else "the control is significantly better")
        parts.append(f" SNR selection vs control at equal parameters: {r.variant} − {r.reference} = {_diff(r)}: "
                     f"{outcome}.")
    gains = comp[comp.family == GAIN]
    if not gains.empty:
        lines = []
        for variant in [v for v in variant_order(gains.variant)]:
            rows = gains[gains.variant == variant]
            said = []
            for r in rows.itertuples():
                t_hib = bool(agg.loc[(agg.task == r.task) & (agg.variant == variant), "higher_is_better"].iloc[0])
                word = "" if r.task == target else f": {_retention_word(r, t_hib)}"
                said.append(f"{r.task} {_diff(r)}{word}")
            lines.append(f"{variant}: " + "; ".join(said))
        parts.append(f" Against the base model (target gain, then retention; Holm over the {len(gains)} comparisons "
                     "of this family; 'lost'/'gained' only where significant): " + ". ".join(lines) + ".")
    if top in cost.index:
        c = cost.loc[top]
        spent = []
        if pd.notna(c.peak_memory_bytes):
            spent.append(f"{_human(c.peak_memory_bytes)}B peak memory")
        if pd.notna(c.train_wall_time_s):
            spent.append(f"{c.train_wall_time_s:.0f} s of training")
        if pd.notna(c.trainable_params):
            spent.append(f"{_human(c.trainable_params)} trainable parameters")
        if spent:
            parts.append(f" Cost of {top}: " + ", ".join(spent) + ".")
    return "".join(parts).strip()


# --- the step ---------------------------------------------------------------------------------------------

def loss_frame(found: dict) -> pd.DataFrame:
    """Training and evaluation losses as rows (model, variant, seed, step, loss, kind) for the plots."""
    rows = []
    for m in found["metrics"]:
        variant = variant_of(m["run"], selection_kind(m["run"], m))
        for kind in ("train_loss", "eval_loss"):
            for step, loss in m.get(kind) or []:
                rows.append({"model": m["run"].get("model"), "variant": variant, "seed": m["run"].get("seed"),
                             "step": step, "loss": math.nan if loss is None else loss,
                             "kind": kind.replace("_", " ")})
    return pd.DataFrame(rows, columns=["model", "variant", "seed", "step", "loss", "kind"])


def sweep_of(metrics: dict) -> dict | None:
    """The learning-rate sweep table (sweep.json from `snrtune pick`) beside a run's metrics.json, if any."""
    path = Path(metrics.get("_path", "")).with_name(SWEEP_FILE)
    if not metrics.get("_path") or not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _g(value) -> str:
    return "–" if value is None else f"{value:g}" if isinstance(value, (int, float)) else str(value)


def settings_frame(metrics: list[dict]) -> pd.DataFrame:
    """Per model and variant, the settings each run trained with: what is tuned per method (learning rate, from
    the sweep or the config; LoRA rank, alpha and the effective scale) beside what is held equal (steps,
    examples per step, sequence length)."""
    rows = []
    for m in metrics:
        cfg, setup, details = m.get("config") or {}, m.get("setup") or {}, m.get("details") or {}
        batch = (cfg.get("per_device_train_batch_size") or 0) * (cfg.get("gradient_accumulation_steps") or 0)
        batch *= max(1, setup.get("world_size") or 1)
        examples_per_step, max_steps = budget_of(m)
        rows.append({"model": m["run"].get("model"), "method": variant_of(m["run"], selection_kind(m["run"], m)),
                     "seed": m["run"].get("seed"),
                     "learning rate": _g(cfg.get("learning_rate")) + (" (sweep)" if sweep_of(m) else ""),
                     "LoRA r": _g(setup.get("lora_r")), "LoRA alpha": _g(setup.get("lora_alpha")),
                     "LoRA scale": _g(setup.get("lora_scale")), "steps": _g(details.get("global_step")),
                     "examples/step": _g(examples_per_step if examples_per_step is not None else batch or None),
                     "max steps": _g(max_steps),
                     "max_seq_length": _g(cfg.get("max_seq_length"))})
    columns = ["model", "method", "seed", "learning rate", "LoRA r", "LoRA alpha", "LoRA scale", "steps",
               "max steps", "examples/step", "max_seq_length"]
    return pd.DataFrame(rows, columns=columns).sort_values(["model", "method", "seed"], kind="stable")


def sweep_frame(metrics: list[dict]) -> pd.DataFrame:
    """Per model, every sweep candidate: method, seed, learning rate, final validation loss, chosen."""
    rows = []
    for m in metrics:
        sweep = sweep_of(m)
        for cand in (sweep or {}).get("candidates", []):
            rows.append({"model": m["run"].get("model"), "method": variant_of(m["run"], selection_kind(m["run"], m)),
                         "seed": m["run"].get("seed"), "learning rate": _g(cand["learning_rate"]),
                         "validation loss": "–" if cand["eval_loss"] is None else f"{cand['eval_loss']:.4f}",
                         "chosen": "✓" if cand["chosen"] else ""})
    return pd.DataFrame(rows, columns=["model", "method", "seed", "learning rate", "validation loss", "chosen"])


def model_sections(runs: pd.DataFrame, agg: pd.DataFrame, comp: pd.DataFrame, cost: pd.DataFrame,
                   target: str, tasks: list[str], metrics: list[dict] = (), retention: list[str] | None = None
                   ) -> list[dict]:
    """Per model: its verdict, score table, comparison table, training settings and learning-rate sweep
    (models are never pooled)."""
    sections = []
    settings, sweeps = settings_frame(list(metrics)), sweep_frame(list(metrics))
    for model in dict.fromkeys(agg["model"]):
        a = agg[agg.model == model]
        c = comp[comp.model == model]
        k = cost.loc[model] if model in cost.index.get_level_values(0) else cost.iloc[:0].droplevel(0)
        table, best = summary_frame(a, k, tasks)
        sections.append({"model": model, "verdict": verdict(a, c, k, target, tasks, retention), "table": table, "best": best,
                         "comparisons": comparison_frame(c), "agg": a, "cost": k,
                         "settings": settings[settings.model == model].drop(columns="model").set_index("method"),
                         "sweep": sweeps[sweeps.model == model].drop(columns="model").set_index("method")})
    return sections


def analyse(found: dict[str, list[dict]], target_task: str | None = None, benchmarks: list[str] = (),
            retention_tasks: list[str] | None = None) -> dict:
    """Everything the report shows, computed from the artifacts ``found`` (collect/discover), nothing written:
    runs, scores (agg), comparisons, costs, per-model sections, the target and retention tasks, loss curves."""
    runs = runs_table(found, read_benchmarks(list(benchmarks)))
    tasks = summary_tasks(found["eval"])
    target = pick_target(tasks, target_task)
    tasks = [target] + [t for t in tasks if t != target]  # the target task leads every table and plot
    index = per_example_index(found["eval"])
    scores = primary_scores(runs, tasks)
    retention = pick_retention(tasks, target, retention_tasks)
    agg = aggregate(scores, index)
    comp = comparisons(scores, agg, index, target, retention)
    cost = costs(runs)
    sections = model_sections(runs, agg, comp, cost, target, tasks, found["metrics"], retention)
    return {"runs": runs, "agg": agg, "comparisons": comp, "cost": cost, "sections": sections, "target": target,
            "tasks": tasks, "retention": retention, "losses": loss_frame(found)}


def build_report(results_dir: str | Path | None, out: str | Path, target_task: str | None = None,
                 files: list[str] | None = None, benchmarks: list[str] = (),
                 retention_tasks: list[str] | None = None) -> Path:
    from snrtune.report import plots

    if files is not None:
        found, where = collect(files), "among --files"
    else:
        if results_dir is None or not Path(results_dir).is_dir():
            raise SnrtuneError(f"RESULTS_DIR {str(results_dir)!r} is not a directory; expected a directory or --files")
        found, where = discover(Path(results_dir)), f"under {str(results_dir)!r}"
    if not found["eval"]:
        raise SnrtuneError(f"no eval.json (from `snrtune evaluate`) found {where}")
    result = analyse(found, target_task, benchmarks, retention_tasks)
    runs, agg, comp, sections = result["runs"], result["agg"], result["comparisons"], result["sections"]
    target, tasks, losses = result["target"], result["tasks"], result["losses"]
    with atomic_dir(out) as tmp:
        runs.to_csv(tmp / RUNS_TABLE, index=False)
        agg.to_csv(tmp / SCORES_TABLE, index=False)
        comp.to_csv(tmp / COMPARISONS_TABLE, index=False)
        for section in sections:
            model = section["model"]
            section["images"] = plots.write_model_plots(
                tmp, model_slug(model), section["agg"], section["cost"], losses[losses.model == model],
                target, tasks, variant_order(section["agg"].variant))
            section["images"] += plots.write_heatmaps(
                tmp, [s for s in found["snr"] if s.get("model") in (None, model)],
                [s for s in found["selection"] if s.get("model") in (None, model)])
        (tmp / SUMMARY).write_text(summary_markdown(sections, target), encoding="utf-8")
        (tmp / REPORT_PAGE).write_text(html_page(sections, target, tmp), encoding="utf-8")
    return Path(out)


def model_slug(model: str | None) -> str:
    return "".join(ch if ch.isalnum() or ch in "-._" else "_" for ch in str(model or "model"))


def summary_markdown(sections: list[dict], target: str) -> str:
    parts = ["# snrtune report\n",
             f"Results per model (runs of different models are never pooled). Target task: {target}.\n"]
    for s in sections:
        parts.append(f"## {s['model']}\n\n{s['verdict']}\n\n{markdown_table(s['table'], s['best'])}\n")
        if not s["comparisons"].empty:
            parts.append(f"{COMPARISON_NOTE}\n\n{comparison_markdown(s['comparisons'])}\n")
        if not s["settings"].empty:
            parts.append(f"{SETTINGS_NOTE}\n\n{markdown_table(s['settings'], {})}\n")
        if not s["sweep"].empty:
            parts.append(f"{SWEEP_NOTE}\n\n{markdown_table(s['sweep'], {})}\n")
    parts.append(CI_NOTE + "\n")
    return "\n".join(parts)


def _html_table(table: pd.DataFrame, best: dict, first: str) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in [first, *table.columns])
    body = ""
    for label, row in table.iterrows():
        cells = "".join(f"<td><b>{html.escape(str(row[c]))}</b></td>" if best.get(c) == label
                        else f"<td>{html.escape(str(row[c]))}</td>" for c in table.columns)
        body += f"<tr><th>{html.escape(str(label))}</th>{cells}</tr>"
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_page(sections: list[dict], target: str, folder: Path) -> str:
    blocks = []
    for s in sections:
        figures = "".join(
            f"<figure><figcaption>{html.escape(caption)}</figcaption>"
            f"<img src=\"data:image/png;base64,{base64.b64encode((folder / name).read_bytes()).decode()}\" "
            f"alt=\"{html.escape(name)}\"></figure>" for name, caption in s["images"])
        comp = ""
        if not s["comparisons"].empty:
            comp = (f"<h3>Paired comparisons</h3><p>{html.escape(COMPARISON_NOTE)}</p>"
                    + _html_table(s["comparisons"].set_index("method"), {}, "method"))
        for key, title, note in (("settings", "Training settings", SETTINGS_NOTE),
                                 ("sweep", "Learning-rate sweep", SWEEP_NOTE)):
            if not s[key].empty:
                comp += f"<h3>{title}</h3><p>{html.escape(note)}</p>" + _html_table(s[key], {}, "method")
        blocks.append(f"<section><h2>{html.escape(str(s['model']))}</h2>"
                      f"<p class=\"verdict\">{html.escape(s['verdict']).replace('**', '')}</p>"
                      f"{_html_table(s['table'], s['best'], 'method')}{comp}{figures}</section>")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>snrtune report</title><style>
body{{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}}
.verdict{{font-size:1.1em;background:#f3f6fa;border-left:4px solid #3a6ea5;padding:.8em 1em}}
table{{border-collapse:collapse;margin:1em 0}} td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:right}}
th{{background:#f5f5f5}} img{{max-width:100%}} figure{{margin:2em 0}} figcaption{{font-weight:bold;margin-bottom:.5em}}
section{{border-top:2px solid #3a6ea5;margin-top:2em}}
</style></head><body><h1>snrtune report</h1>
<p>Results per model (runs of different models are never pooled). Target task: {html.escape(target)}.</p>
{''.join(blocks)}
<p>{html.escape(CI_NOTE)} Every row of every run: <a href="runs.csv">runs.csv</a>; scores with intervals:
<a href="scores.csv">scores.csv</a>; comparisons: <a href="comparisons.csv">comparisons.csv</a>.</p>
</body></html>
"""


def run(args) -> int:
    out = build_report(args.results_dir, args.out, args.target_task, files=args.files, benchmarks=args.benchmark,
                       retention_tasks=args.retention_tasks)
    print(f"wrote {out}/report.html, summary.md, runs.csv, scores.csv, comparisons.csv and plots")
    print((out / "summary.md").read_text(encoding="utf-8"))
    return 0
