"""`snrtune report --files FILE… --out REPORT_DIR` (or `snrtune report RESULTS_DIR …`): tables, plots and one
HTML page over the runs — the entry point; the work is split by job:

- snrtune.report.discovery: finding and validating eval.json, metrics.json, snr.json and selection files (told
  apart by their keys, never their paths; ``--benchmark RUN_ID=TSV`` adds a training job's Snakemake benchmark);
- snrtune.report.variants: a run's variant, selection kind, status (learned, did not learn, diverged), budget;
- snrtune.report.tables: runs, scores with intervals, costs, loss curves, settings and the sweep;
- snrtune.report.comparisons: every paired test of a model (snrtune.report.decision: the winner, the secondary
  families, the cost answer; snrtune.report.stats: the statistics);
- snrtune.report.verdict: one model's verdict; snrtune.report.render: summary.md and report.html;
- snrtune.report.criteria: the selection criteria against the SNR selection (table, overlap heatmap, sentence);
- snrtune.report.plots: the figures; snrtune.report.cards: each merged model's card with its scores.

Everything is per model: runs of different models are never pooled as if they were seeds
(docs/evaluation.md, "How the report decides").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from snrtune import arguments
from snrtune.artifact_names import COMPARISONS_TABLE, REPORT_PAGE, RUNS_TABLE, SCORES_TABLE, SUMMARY
from snrtune.fileio import Owner, atomic_dir
from snrtune.errors import SnrtuneError
from snrtune.report import criteria as report_criteria
from snrtune.report.cards import write_model_cards
from snrtune.report.comparisons import comparisons
from snrtune.report.discovery import collect, discover
from snrtune.naming import model_slug
from snrtune.report.render import comparison_frame, html_page, summary_frame, summary_markdown
from snrtune.report.tables import (aggregate, candidate_frame, costs, loss_frame, per_example_index, primary_scores,
                                   read_benchmarks, runs_table, settings_frame, summary_tasks, sweep_frame,
                                   variant_order)
from snrtune.report.verdict import pick_retention, pick_target, verdict


def add_arguments(parser) -> None:
    parser.add_argument("results_dir", nargs="?", help="directory searched (recursively) for eval/metrics/snr/selection "
                        "files (instead of --files)")
    parser.add_argument("--files", nargs="+", default=None, metavar="FILE",
                        help="exactly these eval.json, metrics.json (or run directories), snr.json and selection files")
    parser.add_argument("--benchmark", action="append", default=[], metavar="RUN_ID=TSV",
                        help="Snakemake benchmark TSV of a training job, e.g. smollm2/full-s0=results/…/full-s0.tsv")
    parser.add_argument("--out", required=True, help="the report directory to write")
    arguments.output(parser, "dir", inputs=("results_dir", "--files", "--benchmark"), inside_ok=("results_dir",),
                     pairs=("--benchmark",))
    parser.add_argument("--target-task", default=None,
                        help="the task fine-tuning aims at (default: the first evaluated task whose role is 'target' in "
                             "snrtune.tasks, else the first task); "
                             "every other task counts as retention")
    parser.add_argument("--retention-tasks", type=_task_list, default=None, metavar="A,B",
                        help="the tasks that measure what fine-tuning may lose (default: every task but the target)")
    margin = parser.add_mutually_exclusive_group()
    margin.add_argument("--margin", type=arguments.positive_float, default=None, metavar="DELTA",
                        help="the cost answer's margin in the target metric's units: a cheaper method is named only "
                             "when shown to be within DELTA of the best (default: 0.05 for a proportion such as "
                             "accuracy, else a quarter of the best method's gain over the base model)")
    margin.add_argument("--margin-of-gain", type=_fraction, default=None, metavar="F",
                        help="the margin as a fraction F of the best method's gain over the base model")


def _fraction(text: str) -> float:
    value = arguments.positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"{text} is out of range; expected a fraction in (0, 1)")
    return value


def _task_list(text: str) -> list[str]:
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    if not tasks:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated task names")
    return tasks


def model_sections(runs: pd.DataFrame, agg: pd.DataFrame, comp: pd.DataFrame, cost: pd.DataFrame,
                   target: str, tasks: list[str], results: dict, metrics: list[dict] = (),
                   retention: list[str] | None = None) -> list[dict]:
    """Per model: its verdict (the answer first, at most six lines), score table, comparison table, training
    settings and learning-rate sweep (models are never pooled)."""
    sections = []
    settings, sweeps = settings_frame(list(metrics)), sweep_frame(list(metrics))
    for model in dict.fromkeys(agg["model"]):
        a = agg[agg.model == model]
        c = comp[comp.model == model]
        k = cost.loc[model] if model in cost.index.get_level_values(0) else cost.iloc[:0].droplevel(0)
        table, best = summary_frame(a, k, tasks)
        sections.append({"model": model, "verdict": verdict(a, c, k, target, tasks, results[model], retention),
                         "table": table, "best": best, "comparisons": comparison_frame(c), "agg": a, "cost": k,
                         "margin_rule": results[model].margin_rule,
                         "settings": settings[settings.model == model].drop(columns="model").set_index("method"),
                         "sweep": sweeps[sweeps.model == model].drop(columns="model").set_index("method")})
        criteria_table = report_criteria.criteria_table(runs, a, c, k, target, retention)
        criteria_sentence = report_criteria.criteria_verdict(c, target)
        sections[-1].update(criteria_md=report_criteria.section_markdown(criteria_table, criteria_sentence),
                            criteria_html=report_criteria.section_html(criteria_table, criteria_sentence))
    return sections


def analyse(found: dict[str, list[dict]], target_task: str | None = None, benchmarks: list[str] = (),
            retention_tasks: list[str] | None = None, margin: float | None = None,
            margin_of_gain: float | None = None) -> dict:
    """Everything the report shows, computed from the artifacts ``found`` (collect/discover), nothing written:
    runs, scores (agg), comparisons, costs, per-model sections, the target and retention tasks, loss curves and
    the sweep candidates' learning–forgetting table (never part of the ranking). A run whose training loss did
    not clearly fall but whose target score is significantly above the base model's has learned: its status is
    corrected and the tables recomputed once."""
    runs = runs_table(found, read_benchmarks(list(benchmarks)))
    tasks = summary_tasks(found["eval"])
    target = pick_target(tasks, target_task)
    tasks = [target] + [t for t in tasks if t != target]  # the target task leads every table and plot
    index = per_example_index(found["eval"])
    retention = pick_retention(tasks, target, retention_tasks)
    scores = primary_scores(runs, tasks)
    agg = aggregate(scores, index)
    comp, results = comparisons(scores, agg, index, target, retention, margin, margin_of_gain)
    rescued = {(model, v) for model, result in results.items() for v in result.rescued}
    if rescued:
        for frame in (runs, scores):
            hit = [(m, v) in rescued for m, v in zip(frame["model"], frame["variant"])]
            frame.loc[hit, "status"], frame.loc[hit, "learned"] = "learned", True
        agg = aggregate(scores, index)
        comp, results = comparisons(scores, agg, index, target, retention, margin, margin_of_gain)
        for model, variant in rescued:
            results[model].rescued.append(variant)
    cost = costs(runs)
    sections = model_sections(runs, agg, comp, cost, target, tasks, results, found["metrics"], retention)
    return {"runs": runs, "agg": agg, "comparisons": comp, "cost": cost, "sections": sections, "target": target,
            "tasks": tasks, "retention": retention, "losses": loss_frame(found),
            "candidates": candidate_frame(found, agg, target, retention)}


def build_report(results_dir: str | Path | None, out: str | Path, target_task: str | None = None,
                 files: list[str] | None = None, benchmarks: list[str] = (),
                 retention_tasks: list[str] | None = None, margin: float | None = None,
                 margin_of_gain: float | None = None) -> Path:
    from snrtune.report import plots

    if files is not None:
        found, where = collect(files), "among --files"
    else:
        if results_dir is None or not Path(results_dir).is_dir():
            raise SnrtuneError(f"RESULTS_DIR {str(results_dir)!r} is not a directory; expected a directory or --files")
        found, where = discover(Path(results_dir)), f"under {str(results_dir)!r}"
    if not found["eval"]:
        raise SnrtuneError(f"no eval.json (from `snrtune evaluate`) found {where}")
    if not any(ev["results"] for ev in found["eval"]):
        raise SnrtuneError(f"every eval.json found {where} is of a diverged run (no scores); expected at least one "
                           f"scored model, e.g. the base model's")
    result = analyse(found, target_task, benchmarks, retention_tasks, margin, margin_of_gain)
    runs, agg, comp, sections = result["runs"], result["agg"], result["comparisons"], result["sections"]
    target, tasks, losses, candidates = result["target"], result["tasks"], result["losses"], result["candidates"]
    with atomic_dir(out, Owner("report")) as tmp:
        runs.to_csv(tmp / RUNS_TABLE, index=False)
        agg.to_csv(tmp / SCORES_TABLE, index=False)
        comp.to_csv(tmp / COMPARISONS_TABLE, index=False)
        for section in sections:
            model = section["model"]
            section["images"] = plots.write_model_plots(
                tmp, model_slug(model), section["agg"], section["cost"], losses[losses.model == model],
                target, tasks, variant_order(section["agg"].variant))
            section["images"] += plots.write_candidate_plot(
                tmp, model_slug(model), candidates[candidates.model == model], target,
                variant_order(section["agg"].variant), str(model))
            section["images"] += report_criteria.write_overlap_heatmaps(
                tmp, model_slug(model), str(model), [s for s in found["selection"] if s.get("model") in (None, model)])
            section["images"] += plots.write_heatmaps(
                tmp, [s for s in found["snr"] if s.get("model") in (None, model)],
                [s for s in found["selection"] if s.get("model") in (None, model)])
        (tmp / SUMMARY).write_text(summary_markdown(sections, target), encoding="utf-8")
        (tmp / REPORT_PAGE).write_text(html_page(sections, target, tmp), encoding="utf-8")
        write_model_cards(tmp, found, runs, agg, comp)  # model_cards/MODEL/RUN/README.md, with the scores
    return Path(out)


def run(args) -> int:
    out = build_report(args.results_dir, args.out, args.target_task, files=args.files, benchmarks=args.benchmark,
                       retention_tasks=args.retention_tasks, margin=args.margin, margin_of_gain=args.margin_of_gain)
    print(f"wrote {out}/report.html, summary.md, runs.csv, scores.csv, comparisons.csv, plots and model_cards/")
    print((out / SUMMARY).read_text(encoding="utf-8"))
    return 0
