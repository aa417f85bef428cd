"""The completed model card of every merged model the report ranks: REPORT_DIR/model_cards/MODEL/RUN/README.md.

The card `snrtune merge` wrote into MERGED_DIR (snrtune.training.card) has no scores: evaluation and the report come
after it, and no step rewrites another step's output. The report writes the same card — metadata and body from the
run's identity (its eval.json ``run``, with the ``base_source`` merge recorded) and its metrics.json — with the scores
added: a model-index (``eval_results``: this model's primary score per task) and a table of this model's scores
beside its variant's mean with the 95 % interval (the report's scores table), and one sentence per paired
comparison of its variant (the report's comparisons). To publish, copy it over MERGED_DIR/README.md or pass it to
huggingface_hub's upload (docs/artifacts.md).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from snrtune.artifact_names import MODEL_CARD, MODEL_CARDS_DIR
from snrtune.training.card import write_card


def _num(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.4g}"


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def comparison_sentence(variant: str, rows: pd.DataFrame) -> str:
    """One sentence per comparison row involving ``variant`` (as the method or the reference), the difference
    signed as ``variant`` minus the other, with its interval at its family's level and its adjusted p (the cost
    answer's non-inferiority rows are left out: they are about the margin, not a difference)."""
    said = []
    for r in rows.itertuples(index=False):
        if variant not in (r.variant, r.reference) or str(r.family).startswith("cost"):
            continue
        other, sign = (r.reference, 1) if r.variant == variant else (r.variant, -1)
        # + 0.0: a flipped zero difference reads 0, not -0
        low, high = (r.ci_low, r.ci_high) if sign == 1 else (-r.ci_high + 0.0, -r.ci_low + 0.0)
        level = f" at {100 * r.confidence:.3g} %" if not _missing(getattr(r, "confidence", None)) else ""
        interval = f" [{_num(low)}, {_num(high)}]{level}" if not _missing(low) else ""
        outcome = "untested" if _missing(r.significant) else "significant" if r.significant else "not significant"
        p = f", adjusted p {_num(r.p_adjusted)}" if not _missing(r.p_adjusted) else ""
        said.append(f"against {other} on {getattr(r, 'task', '?')} ({r.family}): "
                    f"{sign * r.difference + 0.0:+.4g}{interval}{p}, {outcome}")
    if not said:
        return ""
    return (f"Paired comparisons of {variant} in this report (difference = {variant} − the other, with its interval "
            f"and p adjusted within its family, docs/evaluation.md): " + "; ".join(said) + ".")


def run_scores(run_id: str, runs: pd.DataFrame, agg_variant: pd.DataFrame) -> list[dict]:
    """Per task of the variant's scores table: this run's own score of the same metric and the variant's row."""
    out = []
    mine = runs[runs.run == run_id]
    for r in agg_variant.itertuples(index=False):
        own = mine[(mine.task == r.task) & (mine.metric == r.metric)]["score"]
        out.append({"task": r.task, "metric": r.metric, "higher_is_better": r.higher_is_better,
                    "score": None if own.empty or pd.isna(own.iloc[0]) else float(own.iloc[0]),
                    "mean": r.score, "ci_low": r.ci_low, "ci_high": r.ci_high, "n_seeds": r.n_seeds,
                    "delta_vs_base": getattr(r, "delta_vs_base", math.nan)})
    return out


def evaluation_section(variant: str, scores: list[dict], sentence: str) -> str:
    lines = ["## Evaluation\n",
             f"From `snrtune report` (lm-evaluation-harness). This model is one run of **{variant}**; the mean is "
             f"over that variant's seeds, with its 95 % interval (the report's scores.csv).\n",
             f"| task | metric | this model | {variant}: mean [95 % interval] | seeds | vs base |",
             "|---|---|---|---|---|---|"]
    for s in scores:
        arrow = "↑" if s["higher_is_better"] else "↓"
        interval = f" [{_num(s['ci_low'])}, {_num(s['ci_high'])}]" if not _missing(s["ci_low"]) else ""
        delta = "–" if _missing(s["delta_vs_base"]) else f"{s['delta_vs_base']:+.4g}"
        lines.append(f"| {s['task']} | {s['metric']} {arrow} | {_num(s['score'])} | {_num(s['mean'])}{interval} | "
                     f"{s['n_seeds']} | {delta} |")
    lines.append("")
    if sentence:
        lines.append(sentence + "\n")
    return "\n".join(lines)


def eval_results(scores: list[dict]) -> list:
    """The model-index entries: this model's own score per task."""
    from huggingface_hub import EvalResult

    return [EvalResult(task_type="text-generation", dataset_type=s["task"], dataset_name=s["task"],
                       metric_type=s["metric"], metric_name=s["metric"], metric_value=s["score"])
            for s in scores if s["score"] is not None]


def card_path(out: Path, run_id: str) -> Path:
    """REPORT_DIR/model_cards/MODEL/RUN/README.md for a run id ``MODEL/RUN``."""
    model, _, run = run_id.partition("/")
    return Path(out) / MODEL_CARDS_DIR / model / run / MODEL_CARD


def write_model_cards(out: Path, found: dict, runs: pd.DataFrame, agg: pd.DataFrame,
                      comparisons: pd.DataFrame) -> list[Path]:
    """The completed card of every merged model among the evaluations the report ranks (never the base model or
    a sweep candidate)."""
    metrics = {m["run"]["id"]: m for m in found["metrics"]}
    written = []
    for ev in found["eval"]:
        run = ev["run"]
        if run["method"] == "base" or ev.get("model_form") == "base":
            continue
        rows = runs[runs.run == run["id"]]
        if rows.empty:
            continue
        model, variant = rows["model"].iloc[0], rows["variant"].iloc[0]
        scores = run_scores(run["id"], runs, agg[(agg.model == model) & (agg.variant == variant)])
        comp = comparisons[comparisons.model == model] if "model" in comparisons else comparisons.iloc[:0]
        sentence = comparison_sentence(variant, comp)
        path = card_path(out, run["id"])
        path.parent.mkdir(parents=True, exist_ok=True)
        identity = {**run, "status": ev.get("status", run.get("status"))}
        written.append(write_card(path, identity, metrics.get(run["id"], {}), run.get("base_source"),
                                  eval_results=eval_results(scores),
                                  evaluation=evaluation_section(variant, scores, sentence)))
    return written
