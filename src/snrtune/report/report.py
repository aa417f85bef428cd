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
from snrtune.report.cost import COST_COLUMNS, compute_hours, peak_memory
from snrtune.errors import SnrtuneError
from snrtune import tasks as tasks_table
from snrtune.training.sweep import SWEEP_FILE

MAX_BYTES = 200 * 1024 * 1024


def add_arguments(parser) -> None:
    parser.add_argument("results_dir", nargs="?", help="directory searched (recursively) for eval/metrics/snr/selection "
                        "files (instead of --files)")
    parser.add_argument("--files", nargs="+", default=None, metavar="FILE",
                        help="exactly these eval.json, metrics.json (or run directories), snr.json and selection files")
    parser.add_argument("--benchmark", action="append", default=[], metavar="RUN_ID=TSV",
                        help="Snakemake benchmark TSV of a training job, e.g. smollm2/full-s0=results/…/full-s0.tsv")
    parser.add_argument("--out", required=True, help="the report directory to write")
    parser.add_argument("--target-task", default=None,
                        help="the task fine-tuning aims at (default: the first evaluated task whose role is 'target' in "
                             "snrtune.tasks, else the first task); "
                             "every other task counts as retention")
    parser.add_argument("--resamples", type=int, default=stats.RESAMPLES,
                        help="bootstrap and permutation resamples (default %(default)s)")


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
            found[kind].append(obj)
        elif strict:
            raise SnrtuneError(f"--files: {str(path)!r} is not an eval.json, metrics.json, snr.json or selection "
                               f"file{'' if path.exists() else ' (it does not exist)'}")
    for kind in ("eval", "metrics"):  # a copied file must not count as another seed
        unique = {item["run"]["id"]: item for item in reversed(found[kind])}
        found[kind] = sorted(unique.values(), key=lambda item: item["_path"])
    return found


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


def learned(metrics: dict) -> bool | None:
    """Did the run improve its own training objective? True when the mean of the last quarter of its logged
    training losses (at least one) is below the first logged loss; None when fewer than two were logged."""
    values = [float(loss) for _, loss in metrics.get("train_loss") or []
              if isinstance(loss, (int, float)) and math.isfinite(loss)]
    if len(values) < 2:
        return None
    tail = values[-max(1, len(values) // 4):]
    return sum(tail) / len(tail) < values[0]


# --- tables -----------------------------------------------------------------------------------------------

def primary_metric(task: str, metrics: set[str]) -> str | None:
    return tasks_table.primary_metric(task, metrics)


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
    """One row per run × task × metric, with the run's training cost and whether it learned."""
    costs = {m["run"]["id"]: m for m in found["metrics"]}
    benchmarks = benchmarks or {}
    rows = []
    for ev in found["eval"]:
        run, cost = ev["run"], costs.get(ev["run"]["id"], {})
        kind = selection_kind(run, cost)
        for task, metrics in ev["results"].items():
            for metric, score in metrics.items():
                if metric.endswith("_stderr"):
                    continue
                rows.append({
                    "run": run["id"], "model": run.get("model"), "method": run["method"],
                    "variant": variant_of(run, kind), "selection_kind": kind,
                    "t": run.get("top_percent"), "seed": run.get("seed"), "task": task, "metric": metric,
                    "score": score, "stderr": metrics.get(metric + "_stderr"),
                    "higher_is_better": ev.get("higher_is_better", {}).get(task, {}).get(
                        metric, tasks_table.higher_is_better(task, metric)),
                    "learned": learned(cost) if cost else None,
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


def learned_of(values: pd.Series) -> bool | None:
    """A variant learned when none of its seeds failed to (unknown seeds do not count against it)."""
    known = [bool(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return None if not known else all(known)


def aggregate(scores: pd.DataFrame, index: dict, resamples: int = stats.RESAMPLES) -> pd.DataFrame:
    """Per model × variant × task: the mean over seeds with a 95 % CI.

    The CI is a percentile bootstrap over examples (seeds, then examples, when there are several seeds) when
    every seed has per-example scores; else the mean ± 1.96 × the standard error over seeds (several seeds) or
    ± 1.96 × lm-eval's standard error (one seed); ``ci_method`` says which. Models are never pooled.
    """
    rows = []
    for (model, variant, task), group in scores.groupby(["model", "variant", "task"], sort=False, dropna=False):
        group = group[group["score"].notna()]
        if group.empty:
            continue
        metric, n = group["metric"].iloc[0], len(group)
        row = {"model": model, "variant": variant, "task": task, "metric": metric,
               "higher_is_better": bool(group["higher_is_better"].iloc[0]), "score": group["score"].mean(),
               "n_seeds": n, "n_examples": None, "learned": learned_of(group["learned"]),
               "ci_low": math.nan, "ci_high": math.nan, "ci_method": None}
        data = seed_matrix(index, list(group["run"]), task, metric)
        if data is not None:
            ci = stats.bootstrap_ci(data[0], data[1], resamples=resamples)
            row.update(ci_low=ci.low, ci_high=ci.high, ci_method="bootstrap", n_examples=len(data[2]))
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


def comparison_pairs(agg_model: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(variant, reference, why) on one model's target task: every method against full fine-tuning and against
    the best method that learned, the best against the base model, each control against its SNR selection."""
    trained = agg_model[agg_model.variant != "base"]
    if trained.empty:
        return []
    hib = bool(trained["higher_is_better"].iloc[0])
    ok = trained[trained["learned"] != False]  # noqa: E712 (None: unknown, not a failure)
    best = (ok if not ok.empty else trained).set_index("variant")["score"]
    best = best.idxmax() if hib else best.idxmin()
    variants = list(trained["variant"])
    pairs: dict[frozenset, tuple[str, str, str]] = {}

    def add(a, b, why):
        key = frozenset((a, b))
        if a != b and key not in pairs:
            pairs[key] = (a, b, why)
        elif a != b and why not in pairs[key][2]:
            pairs[key] = (*pairs[key][:2], pairs[key][2] + ", " + why)

    for v in variants:
        counterpart = snr_counterpart(v)
        if counterpart in variants:
            add(counterpart, v, "SNR vs control")
    for v in ok["variant"]:  # a run that did not learn is not a contender (it is still compared with full)
        if v != best:
            add(best, v, "best vs other")
    if "full" in variants:
        for v in variants:
            add(v, "full", "vs full")
    if "base" in set(agg_model.variant):
        add(best, "base", "best vs base")
    return list(pairs.values())


def comparisons(scores: pd.DataFrame, agg: pd.DataFrame, index: dict, target: str,
                resamples: int = stats.RESAMPLES) -> pd.DataFrame:
    """Paired comparisons on the target task, per model: difference (variant − reference, in the metric's
    units), its 95 % paired-bootstrap CI, the sign-flip p-value, Holm-adjusted over the model's comparisons,
    and the examples per seed that would separate the two at the observed difference."""
    rows = []
    for model, agg_model in agg[agg.task == target].groupby("model", sort=False, dropna=False):
        sub = scores[(scores.task == target) & (scores.model == model)]
        family = []
        for a, b, why in comparison_pairs(agg_model):
            metric = agg_model["metric"].iloc[0]
            row = {"model": model, "task": target, "metric": metric, "variant": a, "reference": b, "why": why,
                   "difference": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan,
                   "n_examples": None, "n_seeds": None, "examples_needed": math.nan}
            paired = paired_runs(sub, a, b)
            da = db = None
            if paired:
                da = seed_matrix(index, paired[0], target, metric)
                db = seed_matrix(index, paired[1], target, metric, docs=da[2] if da else None)
                if da is not None and db is not None and da[2] != db[2]:
                    da = seed_matrix(index, paired[0], target, metric, docs=db[2])
            if da is not None and db is not None:
                result = stats.compare(da[0], db[0], da[1], resamples=resamples)
                row.update(difference=result.difference, ci_low=result.low, ci_high=result.high,
                           p_value=result.p_value, n_examples=result.n_examples, n_seeds=result.n_seeds,
                           examples_needed=result.examples_needed)
            else:
                sa = agg_model.set_index("variant")["score"]
                row["difference"] = sa[a] - sa[b]
            family.append(row)
        tested = [r for r in family if not math.isnan(r["p_value"])]
        for r, adjusted in zip(tested, stats.holm([r["p_value"] for r in tested]) if tested else []):
            r["p_holm"] = float(adjusted)
        for r in family:
            r.setdefault("p_holm", math.nan)
            r["significant"] = bool(r["p_holm"] < stats.ALPHA) if not math.isnan(r["p_holm"]) else None
        rows += family
    columns = ["model", "task", "metric", "variant", "reference", "why", "difference", "ci_low", "ci_high",
               "p_value", "p_holm", "significant", "n_examples", "n_seeds", "examples_needed"]
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
    return "∞ (no difference)" if math.isinf(n) else f"~{math.ceil(n):,}"


CI_MARK = {"bootstrap": "", "normal over seeds": "*", "lm-eval stderr": "†", None: ""}
SETTINGS_NOTE = ("Training settings per run: the learning rate and LoRA rank/alpha are each method's own (LoRA scale = "
                 "alpha/r, or alpha/sqrt(r) with rsLoRA); steps, examples per step and sequence length are held "
                 "equal.")
SWEEP_NOTE = ("Learning-rate sweep: every candidate trained on the same data and budget; the one with the lowest "
              "final held-out validation loss (never a test score) was merged and evaluated (✓).")
CI_NOTE = ("Scores: mean over seeds [95% confidence interval], change against the base model in parentheses; "
           "best value per column in bold. Intervals: percentile bootstrap over examples (over seeds, then "
           "examples, when there are several seeds) from the per-example scores; * mean ± 1.96 × standard error "
           "over seeds, † ± 1.96 × lm-eval's standard error (no per-example scores: evaluate with --log-samples). "
           "A method marked 'did not learn' did not lower its own training loss and is not ranked.")


def variant_label(row) -> str:
    return f"{row.variant} (did not learn)" if row.learned is False else row.variant


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
        ranked = sub[(sub.index != "base") & (sub["learned"] != False)]  # noqa: E712
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
    """One model's comparisons as strings."""
    rows = []
    for r in comp.itertuples():
        ci = f" [{_fmt(r.ci_low)}, {_fmt(r.ci_high)}]" if not math.isnan(r.ci_low) else " (untested)"
        verdict = "–" if r.significant is None else ("significant" if r.significant else "indistinguishable")
        rows.append({"method": r.variant, "against": r.reference, "why": r.why,
                     "difference [95% CI]": f"{r.difference:+.3g}{ci}", "p": _p(r.p_value),
                     "Holm p": _p(r.p_holm), "at α=0.05": verdict,
                     "examples to separate": "–" if r.significant else _needed(r.examples_needed)})
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
    return tasks_table.default_target(tasks)


def _interval(r) -> str:
    return f"{_fmt(r.score)} [{_fmt(r.ci_low)}, {_fmt(r.ci_high)}]" if not math.isnan(r.ci_low) else _fmt(r.score)


def verdict(agg: pd.DataFrame, comp: pd.DataFrame, cost: pd.DataFrame, target: str, tasks: list[str]) -> str:
    """One model's verdict: a winner only when it is significantly ahead of every other method that learned
    (Holm-adjusted paired tests); else which methods are indistinguishable and how many examples would tell."""
    sub = agg[agg.task == target].set_index("variant")
    trained = sub.drop("base", errors="ignore")
    if trained.empty:
        return f"Only the base model was evaluated; no fine-tuning method to compare on {target}."
    hib, metric = bool(sub["higher_is_better"].iloc[0]), sub["metric"].iloc[0]
    failed = sorted(trained.index[trained["learned"] == False])  # noqa: E712
    ok = trained.drop(failed)
    parts = []
    if ok.empty:
        return (f"No method lowered its own training loss on this model: {', '.join(failed)} did not learn; "
                "no method is ranked.")
    ranked = ok["score"].sort_values(ascending=not hib)
    top = ranked.index[0]
    others = list(ranked.index[1:])
    vs = comp[(comp.variant == top) & (comp.reference.isin(others))]
    vs = pd.concat([vs, comp[(comp.reference == top) & (comp.variant.isin(others))]])
    holm_note = (f"paired tests on the same examples, p-values Holm-corrected over the {len(comp)} comparisons "
                 f"on {target} for this model")
    w = ok.loc[top]
    score = f"{target} ({metric}) {_interval(w)}"
    if not others:
        parts.append(f"**{top}** is the only method that learned; {score} (no other method to compare with).")
    elif len(vs) < len(others) or vs["p_holm"].isna().any():
        parts.append(f"{top} has the best {score}, but without per-example scores for every method the "
                     "differences are not tested, so no winner is named (evaluate with --log-samples).")
    else:
        ties = vs[~vs["significant"].astype(bool)]
        if ties.empty:
            parts.append(f"**{top}** wins on {score}: significantly ahead of {', '.join(others)} "
                         f"(largest Holm-adjusted p {_p(vs['p_holm'].max())}; {holm_note}).")
        else:
            tied = [r.reference if r.variant == top else r.variant for r in ties.itertuples()]
            need = ", ".join(f"{name}: {_needed(r.examples_needed)}" for name, r in zip(tied, ties.itertuples()))
            parts.append(f"No winner on {target}: {top} has the best {metric} ({_interval(w)}) but is "
                         f"indistinguishable from {', '.join(tied)} (Holm-adjusted p ≥ {_p(ties['p_holm'].min())}; "
                         f"{holm_note}). Examples per seed that would separate them at the observed difference "
                         f"(two-sided α=0.05, power 0.8): {need}; more seeds narrow the interval too.")
    if "base" in sub.index:
        base_cmp = comp[(comp.variant == top) & (comp.reference == "base")]
        text = f" Against the base model ({_fmt(sub.loc['base', 'score'])}): {w.delta_vs_base:+.3g}"
        if not base_cmp.empty and not math.isnan(base_cmp["p_holm"].iloc[0]):
            text += f" (Holm p {_p(base_cmp['p_holm'].iloc[0])})"
        parts.append(text + ".")
    full = comp[(comp.reference == "full") & (comp.variant != "base")]
    if not full.empty and top != "full":
        r = full[full.variant == top]
        if not r.empty and not math.isnan(r["p_holm"].iloc[0]):
            r = r.iloc[0]
            parts.append(f" Against full fine-tuning: {r.difference:+.3g} [{_fmt(r.ci_low)}, {_fmt(r.ci_high)}], "
                         f"Holm p {_p(r.p_holm)}.")
    for r in comp[comp.why.str.contains("SNR vs control")].itertuples():
        if math.isnan(r.p_holm):
            parts.append(f" SNR selection vs control at equal parameters: {r.variant} − {r.reference} = "
                         f"{r.difference:+.3g} (untested: no per-example scores).")
        else:
            outcome = ("the SNR selection is significantly better" if r.significant and (r.difference > 0) == hib
                       else "the control is significantly better" if r.significant
                       else "indistinguishable")
            parts.append(f" SNR selection vs control at equal parameters: {r.variant} − {r.reference} = "
                         f"{r.difference:+.3g} [{_fmt(r.ci_low)}, {_fmt(r.ci_high)}], Holm p {_p(r.p_holm)}: "
                         f"{outcome}.")
    if failed:
        parts.append(f" Did not learn (final training loss not below the first), not ranked: {', '.join(failed)}.")
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
    forgot = []
    for task in tasks:
        t = agg[agg.task == task].set_index("variant")
        if task == target or top not in t.index or "base" not in t.index:
            continue
        before, after = t.loc["base", "score"], t.loc[top, "score"]
        worse = after < before if bool(t["higher_is_better"].iloc[0]) else after > before
        rel = f"{(after - before) / before:+.1%}, " if before else ""
        forgot.append(f"{task} {t['metric'].iloc[0]} {_fmt(before)} → {_fmt(after)} ({rel}{'lost' if worse else 'kept'})")
    if forgot:
        parts.append(f" Retention of {top} against the base model: " + "; ".join(forgot) + ".")
    return "".join(parts)


# --- the step ---------------------------------------------------------------------------------------------

def loss_frame(found: dict) -> pd.DataFrame:
    """Training and evaluation losses as rows (model, variant, seed, step, loss, kind) for the plots."""
    rows = []
    for m in found["metrics"]:
        variant = variant_of(m["run"], selection_kind(m["run"], m))
        for kind in ("train_loss", "eval_loss"):
            for step, loss in m.get(kind) or []:
                rows.append({"model": m["run"].get("model"), "variant": variant, "seed": m["run"].get("seed"),
                             "step": step, "loss": loss, "kind": kind.replace("_", " ")})
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
        rows.append({"model": m["run"].get("model"), "method": variant_of(m["run"], selection_kind(m["run"], m)),
                     "seed": m["run"].get("seed"),
                     "learning rate": _g(cfg.get("learning_rate")) + (" (sweep)" if sweep_of(m) else ""),
                     "LoRA r": _g(setup.get("lora_r")), "LoRA alpha": _g(setup.get("lora_alpha")),
                     "LoRA scale": _g(setup.get("lora_scale")), "steps": _g(details.get("global_step")),
                     "examples/step": _g(batch * max(1, setup.get("world_size") or 1)),
                     "max_seq_length": _g(cfg.get("max_seq_length"))})
    columns = ["model", "method", "seed", "learning rate", "LoRA r", "LoRA alpha", "LoRA scale", "steps",
               "examples/step", "max_seq_length"]
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
                   target: str, tasks: list[str], metrics: list[dict] = ()) -> list[dict]:
    """Per model: its verdict, score table, comparison table, training settings and learning-rate sweep
    (models are never pooled)."""
    sections = []
    settings, sweeps = settings_frame(list(metrics)), sweep_frame(list(metrics))
    for model in dict.fromkeys(agg["model"]):
        a = agg[agg.model == model]
        c = comp[comp.model == model]
        k = cost.loc[model] if model in cost.index.get_level_values(0) else cost.iloc[:0].droplevel(0)
        table, best = summary_frame(a, k, tasks)
        sections.append({"model": model, "verdict": verdict(a, c, k, target, tasks), "table": table, "best": best,
                         "comparisons": comparison_frame(c), "agg": a, "cost": k,
                         "settings": settings[settings.model == model].drop(columns="model").set_index("method"),
                         "sweep": sweeps[sweeps.model == model].drop(columns="model").set_index("method")})
    return sections


def build_report(results_dir: str | Path | None, out: str | Path, target_task: str | None = None,
                 files: list[str] | None = None, benchmarks: list[str] = (),
                 resamples: int = stats.RESAMPLES) -> Path:
    from snrtune.report import plots

    if resamples < 100:
        raise SnrtuneError(f"--resamples {resamples} is too few for a 95% interval: expected at least 100")
    if files is not None:
        found, where = collect(files), "among --files"
    else:
        if results_dir is None or not Path(results_dir).is_dir():
            raise SnrtuneError(f"RESULTS_DIR {str(results_dir)!r} is not a directory; expected a directory or --files")
        found, where = discover(Path(results_dir)), f"under {str(results_dir)!r}"
    if not found["eval"]:
        raise SnrtuneError(f"no eval.json (from `snrtune evaluate`) found {where}")
    runs = runs_table(found, read_benchmarks(list(benchmarks)))
    tasks = summary_tasks(found["eval"])
    target = pick_target(tasks, target_task)
    tasks = [target] + [t for t in tasks if t != target]  # the target task leads every table and plot
    index = per_example_index(found["eval"])
    scores = primary_scores(runs, tasks)
    agg = aggregate(scores, index, resamples)
    comp = comparisons(scores, agg, index, target, resamples)
    cost = costs(runs)
    sections = model_sections(runs, agg, comp, cost, target, tasks, found["metrics"])
    losses = loss_frame(found)
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
            parts.append(f"Paired comparisons on {target} (difference = method − against, same examples and "
                         f"seeds; sign-flip permutation p-value, Holm-corrected):\n\n"
                         f"{comparison_markdown(s['comparisons'])}\n")
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
            comp = (f"<h3>Paired comparisons on {html.escape(target)}</h3>"
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
                       resamples=args.resamples)
    print(f"wrote {out}/report.html, summary.md, runs.csv, scores.csv, comparisons.csv and plots")
    print((out / "summary.md").read_text(encoding="utf-8"))
    return 0
