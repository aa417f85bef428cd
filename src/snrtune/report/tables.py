"""The report's tables as data: runs (one row per run × task × metric), scores per variant with intervals,
costs, loss curves, training settings and the learning-rate sweep."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from snrtune import tasks as tasks_table
from snrtune.artifact_names import SWEEP_FILE
from snrtune.errors import SnrtuneError
from snrtune.report import stats
from snrtune.report.cost import COST_COLUMNS, FAILED, compute_hours
from snrtune.report.variants import budget_of, run_status, selection_kind, snr_counterpart, variant_of

def primary_metric(task: str, metrics: set[str]) -> str | None:
    """The metric ranked for ``task`` (the task table, snrtune.tasks)."""
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
    """One row per run × task × metric, with the run's training cost, status and budget (a task that two eval
    files of one run both hold counts once)."""
    costs = {m["run"]["id"]: m for m in found["metrics"]}
    benchmarks = benchmarks or {}
    rows, seen = [], set()
    for ev in found["eval"]:
        run, cost = ev["run"], costs.get(ev["run"]["id"], {})
        kind = selection_kind(run, cost)
        status = "diverged" if ev.get("status") == "diverged" else run_status(cost) if cost else None
        examples_per_step, max_steps = budget_of(cost)
        # a diverged run's eval.json has no results: one row without task or score keeps the run (and its cost)
        results = ev["results"] if ev.get("status") != "diverged" else {None: {None: None}}
        for task, metrics in results.items():
            if (run["id"], task) in seen:
                continue
            seen.add((run["id"], task))
            for metric, score in metrics.items():
                if metric is not None and metric.endswith("_stderr"):
                    continue
                rows.append({
                    "run": run["id"], "model": run.get("model"), "method": run["method"],
                    "variant": variant_of(run, kind), "selection_kind": kind,
                    "t": run.get("top_percent"), "seed": run.get("seed"), "task": task, "metric": metric,
                    "score": score, "stderr": metrics.get(f"{metric}_stderr"),
                    "higher_is_better": None if task is None else ev.get("higher_is_better", {}).get(task, {}).get(
                        metric, tasks_table.higher_is_better(task, metric)),
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
    """Rows of ``runs`` for each summary task's primary metric; a diverged run without scores (its row has no
    task) gets a row without a score on every task, so the tables show it, as diverged."""
    keep = []
    unscored = runs[runs.task.isna()]
    for task in tasks:
        metric = primary_metric(task, set(runs.loc[runs.task == task, "metric"]))
        rows = runs[(runs.task == task) & (runs.metric == metric)]
        keep.append(rows)
        if not rows.empty and not unscored.empty:
            keep.append(unscored.assign(task=task, metric=metric,
                                        higher_is_better=rows["higher_is_better"].iloc[0]))
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
    """Per model × variant × task: the mean over (distinct) seeds with a 95 % interval. With per-example scores for
    every seed, snrtune.report.decision.intervals (the function the calibration benchmark checks): about the method
    — the model's checkpoint variance on the task pooled over its variants — for a variant with two distinct seeds
    or more, else about its checkpoint; Wilson for 0/1 scores, else a t interval. Without them: mean ± t × the
    standard error over seeds (several seeds; it omits the example variance) or ± 1.96 × lm-eval's standard error
    (one seed); ``ci_method`` says which. ``duplicate_seeds``: seeds whose per-example scores equal another's
    (counted once). Models are never pooled."""
    from snrtune.report.decision import BASE, FAILED_ROLE, METHOD, Arm, intervals

    rows, arms = [], {}
    for (model, variant, task), group in scores.groupby(["model", "variant", "task"], sort=False, dropna=False):
        status = status_of(group["status"])  # over every seed, scored or not
        group = group[group["score"].notna()] if group["score"].notna().any() or status != "diverged" else group
        if group.empty:  # a diverged variant without scores stays, with a NaN score (shown, never compared)
            continue
        metric, n = group["metric"].iloc[0], int(group["score"].notna().sum())
        row = {"model": model, "variant": variant, "task": task, "metric": metric,
               "higher_is_better": bool(group["higher_is_better"].iloc[0]), "score": group["score"].mean(),
               "n_seeds": n, "duplicate_seeds": 0, "n_examples": None, "status": status,
               "learned": None if status is None else status == "learned",
               "examples_per_step": _budget(group["examples_per_step"]), "max_steps": _budget(group["max_steps"]),
               "ci_low": math.nan, "ci_high": math.nan, "ci_method": None}
        data = seed_matrix(index, list(group["run"]), task, metric) if group["score"].notna().all() else None
        if data is not None:
            role = BASE if variant == "base" else FAILED_ROLE if status in FAILED else METHOD
            arms.setdefault((model, task, data[1]), []).append((Arm(str(variant), data[0], role), row, len(data[2])))
        elif n > 1:
            low, high = stats.t_interval_over_seeds(group["score"])
            row.update(ci_low=low, ci_high=high, ci_method="t over seeds (no example variance)")
        elif pd.notna(group["stderr"].iloc[0]):
            low, high = stats.normal_interval(row["score"], float(group["stderr"].iloc[0]))
            row.update(ci_low=low, ci_high=high, ci_method="lm-eval stderr")
        rows.append(row)
    for (model, task, aggregation), members in arms.items():
        cis = intervals([arm for arm, _, _ in members], aggregation)
        for arm, row, n_examples in members:
            ci = cis[arm.name]
            row.update(score=ci.estimate, ci_low=ci.low, ci_high=ci.high, ci_method=ci.method, n_examples=n_examples,
                       n_seeds=ci.n_seeds, duplicate_seeds=row["n_seeds"] - ci.n_seeds)
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


CANDIDATE_COLUMNS = ["model", "variant", "learning_rate", "n_seeds", "picked_by", "target_gain", "retention_task",
                     "retention_change"]


def candidate_frame(found: dict, agg: pd.DataFrame, target: str, retention: list[str]) -> pd.DataFrame:
    """The learning–forgetting table of the sweep candidates' evaluations (``found["candidate"]``; never ranked):
    per model × variant × learning rate with at least two evaluated learning rates in its variant, and per
    retention task (one row each, ``retention_task``; none without retention tasks), the target gain (the
    candidate's primary score on ``target`` minus the base model's, averaged over the candidate's seeds) and that
    task's retention change (the same difference, in the task's own metric: an accuracy change is never averaged
    with a perplexity change), each signed so that positive is better (a lower-is-better metric's difference
    negated). ``picked_by``: how many of its seeds' runs `snrtune pick` made of this learning rate (the run's
    metrics.json ``config.learning_rate``). A model without a base evaluation has no rows (no gain to measure)."""
    picked = {m["run"]["id"]: (m.get("config") or {}).get("learning_rate") for m in found["metrics"]}
    kinds = {m["run"]["id"]: selection_kind(m["run"], m) for m in found["metrics"]}
    base = agg[agg.variant == "base"].set_index(["model", "task"])
    rows = []
    for ev in found.get("candidate", []):
        run, lr = ev["run"], float(ev["run"]["learning_rate"])
        chosen = picked.get(run["id"])
        row = {"model": run.get("model"), "variant": variant_of(run, kinds.get(run["id"]) or selection_kind(run)),
               "learning_rate": lr, "picked": chosen is not None and math.isclose(float(chosen), lr, rel_tol=1e-9)}
        for task in [target, *retention]:
            if (row["model"], task) not in base.index:
                continue
            ref = base.loc[(row["model"], task)]
            score = (ev["results"].get(task) or {}).get(ref["metric"])
            if score is not None:
                row[task] = (1 if ref["higher_is_better"] else -1) * (score - ref["score"])
        rows.append(row)
    frame = pd.DataFrame(rows, columns=["model", "variant", "learning_rate", "picked", target, *retention])
    if frame.empty:
        return pd.DataFrame(columns=CANDIDATE_COLUMNS)
    grouped = frame.groupby(["model", "variant", "learning_rate"], sort=True)
    out = grouped.agg(n_seeds=("picked", "size"), picked_by=("picked", "sum")).reset_index()
    means = grouped[[target, *retention]].mean().reset_index(drop=True)  # mean of each task's change over seeds
    out["target_gain"] = means[target].to_numpy(dtype=float)
    out["picked_by"] = out["picked_by"].astype(int)
    enough = out.groupby(["model", "variant"])["learning_rate"].transform("size") >= 2
    keep = enough & out["target_gain"].notna()
    parts = [out.assign(retention_task=task, retention_change=means[task].to_numpy(dtype=float))[keep]
             for task in retention] or [out.assign(retention_task=None, retention_change=math.nan)[keep]]
    return pd.concat(parts)[CANDIDATE_COLUMNS].reset_index(drop=True)
