"""`snrtune report --files FILE… --out REPORT_DIR` (or `snrtune report RESULTS_DIR …`): tables, plots and one
HTML page over the runs.

The workflow passes exactly the files its current config produced (``--files``, ``--benchmark``); a user may
instead name a directory, searched recursively. Files are told apart by their content (docs/artifacts.md),
never by their paths: eval.json (run + results + config), metrics.json (run + train_loss + trainable_params;
a run directory stands for its metrics.json), snr.json (modules + parameters) and selection YAMLs
(unfrozen_parameters + modules). ``--benchmark RUN_ID=TSV`` adds a Snakemake benchmark of a training job.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

import pandas as pd
import yaml

from snrtune.artifacts import atomic_dir
from snrtune.errors import SnrtuneError

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


# --- tables -----------------------------------------------------------------------------------------------

def variant_of(run: dict) -> str:
    """The method as compared in the report: ``spectrum-t25``, ``lora``, ``base``."""
    t = run.get("top_percent")
    return f"{run['method']}-t{t:g}" if t is not None else run["method"]


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
    """One row per run × task × metric, with the run's training cost."""
    costs = {m["run"]["id"]: m for m in found["metrics"]}
    benchmarks = benchmarks or {}
    rows = []
    for ev in found["eval"]:
        run, cost = ev["run"], costs.get(ev["run"]["id"], {})
        for task, metrics in ev["results"].items():
            for metric, score in metrics.items():
                if metric.endswith("_stderr"):
                    continue
                rows.append({
                    "run": run["id"], "model": run.get("model"), "method": run["method"], "variant": variant_of(run),
                    "t": run.get("top_percent"), "seed": run.get("seed"), "task": task, "metric": metric,
                    "score": score, "stderr": metrics.get(metric + "_stderr"),
                    "higher_is_better": ev.get("higher_is_better", {}).get(task, {}).get(
                        metric, "perplexity" not in metric and "bits_per" not in metric),
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


def primary_scores(runs: pd.DataFrame, tasks: list[str]) -> pd.DataFrame:
    """Rows of ``runs`` for each summary task's primary metric."""
    keep = []
    for task in tasks:
        metric = primary_metric(task, set(runs.loc[runs.task == task, "metric"]))
        keep.append(runs[(runs.task == task) & (runs.metric == metric)])
    return pd.concat(keep) if keep else runs.iloc[:0]


def aggregate(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds per variant × task; stderr across seeds when there are several, else lm-eval's."""
    def one(group: pd.DataFrame) -> pd.Series:
        n = group["score"].notna().sum()
        across = group["score"].std(ddof=1) / math.sqrt(n) if n > 1 else group["stderr"].iloc[0]
        return pd.Series({"score": group["score"].mean(), "stderr": across, "n_seeds": n,
                          "metric": group["metric"].iloc[0], "higher_is_better": bool(group["higher_is_better"].iloc[0])})
    out = scores.groupby(["variant", "task"], sort=False).apply(one, include_groups=False).reset_index()
    base = out[out.variant == "base"].set_index("task")["score"]
    out["delta_vs_base"] = out["score"] - out["task"].map(base)
    return out


COST_COLUMNS = ["trainable_params", "peak_memory_bytes", "train_wall_time_s", "tokens_per_s", "gpu_seconds",
                "cpu_seconds", "peak_allocated_bytes", "peak_reserved_bytes"]


def compute_hours(cost: pd.DataFrame) -> tuple[pd.Series, str]:
    """GPU-hours (GPUs × training seconds over all attempts) when any run used a GPU, else CPU-hours."""
    gpu = cost["gpu_seconds"] if "gpu_seconds" in cost else pd.Series(index=cost.index, dtype=float)
    if (gpu.fillna(0) > 0).any():
        return gpu / 3600, "GPU-hours"
    cpu = cost["cpu_seconds"] if "cpu_seconds" in cost else pd.Series(index=cost.index, dtype=float)
    return cpu / 3600, "CPU-hours (no GPU)"


def peak_memory(cost: pd.DataFrame) -> tuple[pd.Series, str]:
    """Peak allocated accelerator memory when recorded, else the peak memory of the run (RSS on a CPU)."""
    allocated = cost["peak_allocated_bytes"] if "peak_allocated_bytes" in cost else None
    if allocated is not None and allocated.notna().any():
        return allocated, "peak allocated GPU memory"
    return cost["peak_memory_bytes"], "peak memory (RSS on a CPU)"


def costs(runs: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in COST_COLUMNS if c in runs]
    per_run = runs.drop_duplicates("run").set_index("run")
    numbers = per_run[cols].astype(float).assign(variant=per_run["variant"])
    out = numbers.groupby("variant", sort=False)[cols].mean()
    out["compute_hours"], _ = compute_hours(out)
    return out


def variant_order(variants) -> list[str]:
    return sorted(set(variants), key=lambda v: (v != "base", v))


# --- summary.md -------------------------------------------------------------------------------------------

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


def summary_frame(agg: pd.DataFrame, cost: pd.DataFrame, tasks: list[str]) -> tuple[pd.DataFrame, dict]:
    """The method × task table as strings, plus which cell is best per column."""
    order = variant_order(agg.variant)
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
            cell = f"{_fmt(r.score)} ± {_fmt(r.stderr)}"
            if v != "base" and not math.isnan(r.delta_vs_base):
                cell += f" ({r.delta_vs_base:+.3g})"
            cells[v] = cell
        table[col] = pd.Series(cells)
        best[col] = (sub["score"].idxmax() if hib else sub["score"].idxmin())
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
    return table, best


def markdown_table(table: pd.DataFrame, best: dict) -> str:
    head = ["method"] + list(table.columns)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for variant, row in table.iterrows():
        cells = [f"**{row[c]}**" if best.get(c) == variant else row[c] for c in table.columns]
        lines.append("| " + " | ".join([variant] + cells) + " |")
    return "\n".join(lines)


# --- verdict ----------------------------------------------------------------------------------------------

def pick_target(tasks: list[str], requested: str | None) -> str:
    if requested:
        if requested not in tasks:
            raise SnrtuneError(f"--target-task {requested!r} was not evaluated; expected one of {', '.join(tasks)}")
        return requested
    return DEFAULT_TARGET if DEFAULT_TARGET in tasks else tasks[0]


def verdict(agg: pd.DataFrame, cost: pd.DataFrame, target: str, tasks: list[str]) -> str:
    sub = agg[agg.task == target].set_index("variant")
    trained = sub.drop("base", errors="ignore")
    if trained.empty:
        return f"Only the base model was evaluated; no fine-tuning method to compare on {target}."
    hib, metric = bool(sub["higher_is_better"].iloc[0]), sub["metric"].iloc[0]
    ranked = trained["score"].sort_values(ascending=not hib)
    win = ranked.index[0]
    w = trained.loc[win]
    text = f"**{win}** won on {target} ({metric}): {_fmt(w.score)} ± {_fmt(w.stderr)}"
    if "base" in sub.index:
        text += f", {w.delta_vs_base:+.3g} against the base model ({_fmt(sub.loc['base', 'score'])})"
    if len(ranked) > 1:
        second = ranked.index[1]
        gap = abs(w.score - trained.loc[second, "score"])
        close = gap <= math.hypot(w.stderr or 0, trained.loc[second, "stderr"] or 0)
        text += f", {_fmt(gap)} ahead of {second}" + (" (within one standard error: a tie)" if close else "")
    text += "."
    if win in cost.index:
        c = cost.loc[win]
        parts = []
        if pd.notna(c.peak_memory_bytes):
            parts.append(f"{_human(c.peak_memory_bytes)}B peak memory")
        if pd.notna(c.train_wall_time_s):
            parts.append(f"{c.train_wall_time_s:.0f} s of training")
        if pd.notna(c.trainable_params):
            parts.append(f"{_human(c.trainable_params)} trainable parameters")
        if parts:
            text += " Cost: " + ", ".join(parts) + "."
    forgot = []
    for task in tasks:
        if task == target:
            continue
        t = agg[(agg.task == task)].set_index("variant")
        if win not in t.index or "base" not in t.index:
            continue
        before, after = t.loc["base", "score"], t.loc[win, "score"]
        worse = after < before if bool(t["higher_is_better"].iloc[0]) else after > before
        rel = f"{(after - before) / before:+.1%}, " if before else ""
        forgot.append(f"{task} {t['metric'].iloc[0]} {_fmt(before)} → {_fmt(after)} ({rel}{'lost' if worse else 'kept'})")
    if forgot:
        text += " Retention against the base model: " + "; ".join(forgot) + "."
    return text


# --- the step ---------------------------------------------------------------------------------------------

def build_report(results_dir: str | Path | None, out: str | Path, target_task: str | None = None,
                 files: list[str] | None = None, benchmarks: list[str] = ()) -> Path:
    from snrtune import plots

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
    agg = aggregate(primary_scores(runs, tasks))
    cost = costs(runs)
    table, best = summary_frame(agg, cost, tasks)
    text = verdict(agg, cost, target, tasks)
    with atomic_dir(out) as tmp:
        runs.to_csv(tmp / "runs.csv", index=False)
        (tmp / "summary.md").write_text(
            f"# snrtune report\n\n{text}\n\n{markdown_table(table, best)}\n\n"
            f"Scores: mean ± standard error over seeds (lm-eval's standard error for a single seed), "
            f"change against the base model in parentheses; best value per column in bold.\n",
            encoding="utf-8")
        images = plots.write_all(tmp, runs, agg, found, target, tasks)
        (tmp / "report.html").write_text(html_page(text, table, best, images, tmp), encoding="utf-8")
    return Path(out)


def html_page(text: str, table: pd.DataFrame, best: dict, images: list[tuple[str, str]], folder: Path) -> str:
    def cell(col, variant):
        value = html.escape(str(table.loc[variant, col]))
        return f"<td><b>{value}</b></td>" if best.get(col) == variant else f"<td>{value}</td>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["method", *table.columns])
    body = "".join("<tr><th>" + html.escape(v) + "</th>" + "".join(cell(c, v) for c in table.columns) + "</tr>"
                   for v in table.index)
    verdict_html = html.escape(text).replace("**", "")
    figures = "".join(
        f"<figure><figcaption>{html.escape(caption)}</figcaption>"
        f"<img src=\"data:image/png;base64,{base64.b64encode((folder / name).read_bytes()).decode()}\" "
        f"alt=\"{html.escape(name)}\"></figure>" for name, caption in images)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>snrtune report</title><style>
body{{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}}
.verdict{{font-size:1.1em;background:#f3f6fa;border-left:4px solid #3a6ea5;padding:.8em 1em}}
table{{border-collapse:collapse;margin:1em 0}} td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:right}}
th{{background:#f5f5f5}} img{{max-width:100%}} figure{{margin:2em 0}} figcaption{{font-weight:bold;margin-bottom:.5em}}
</style></head><body><h1>snrtune report</h1><p class="verdict">{verdict_html}</p>
<table><tr>{head}</tr>{body}</table>
<p>Scores: mean ± standard error over seeds (lm-eval's standard error for a single seed), change against the
base model in parentheses; best value per column in bold. Every row of every run: <a href="runs.csv">runs.csv</a>.</p>
{figures}</body></html>
"""


def run(args) -> int:
    out = build_report(args.results_dir, args.out, args.target_task, files=args.files, benchmarks=args.benchmark)
    print(f"wrote {out}/report.html, summary.md, runs.csv and plots")
    print((out / "summary.md").read_text(encoding="utf-8"))
    return 0
