"""Formatting: numbers, the score and comparison tables, summary.md and report.html."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import pandas as pd

from snrtune.artifact_names import COMPARISONS_TABLE, RUNS_TABLE, SCORES_TABLE
from snrtune.report.cost import FAILED, compute_hours
from snrtune.report.tables import variant_order
from snrtune.report.variants import snr_counterpart


def _fmt(value: float, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if abs(value) >= 10:
        digits = 1 if abs(value) >= 100 else 2
    small = 0 < abs(value) < 0.5 * 10 ** -digits
    return f"{value:.{digits}g}" if abs(value) >= 1000 or small else f"{value:.{digits}f}"


def level_suffix(confidence: float, joiner: str = "") -> str:
    """An interval's level beside it when it is not the default 95 % (a corrected family's): `` (99%)``, or with
    ``joiner="at"`` `` at 99%``."""
    if round(confidence, 4) == 0.95:
        return ""
    return f" at {100 * confidence:.3g}%" if joiner == "at" else f" ({100 * confidence:.3g}%)"


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


def _needed(n: float, difference: float = math.nan) -> str:
    """Examples per seed for power 0.8; inf means no difference to detect, or a seed term more examples cannot
    shrink."""
    if n is None or math.isnan(n):
        return "–"
    if math.isinf(n):
        return "∞ (no difference)" if difference == 0 else "∞ (more examples alone do not suffice)"
    return f"~{math.ceil(n):,}"


CI_MARK = {"wilson": "", "t": "", "t (delta method)": "", "t over seeds (no example variance)": "*",
           "lm-eval stderr": "†", None: ""}
SETTINGS_NOTE = ("Training settings per run: the learning rate and LoRA rank/alpha are each method's own (LoRA scale = "
                 "alpha/r, or alpha/sqrt(r) with rsLoRA); steps, examples per step and sequence length are held "
                 "equal.")
COMPARISON_NOTE = ("Paired comparisons (difference = method − against, in the metric's units, on the examples both "
                   "were scored on; seeds of different methods are different checkpoints). 'primary: best vs each' "
                   "decides the winner: it needs every row significant at α = 0.05 in its favour (an "
                   "intersection–union test, no correction needed; 95% intervals). 'secondary: vs reference' "
                   "(against full fine-tuning), 'secondary: control vs SNR selection' and 'gain and retention' "
                   "(against the base model) are each Bonferroni-corrected on their own: the interval is at "
                   "1 − 0.05/m, and 'significant' means it excludes 0. 'cost answer: within the margin' rows are "
                   "one-sided non-inferiority tests at 0.05/m: shown when the bound clears the margin. Unit 'seeds': a "
                   "claim about the methods (the checkpoint variance is measured); 'checkpoints': about these runs. "
                   "Power and examples per seed for power 0.8 are at each row's level.")
SWEEP_NOTE = ("Learning-rate sweep: every candidate trained on the same data and budget; the one with the lowest "
              "final held-out validation loss (never a test score) was merged and evaluated (✓).")
CI_NOTE = ("Scores: mean over seeds [95% interval], change against the base model in parentheses; best value per "
           "column in bold among the methods that may be chosen (never a control, never a failed run; none when "
           "only one may be). Intervals "
           "from the per-example scores: with two seeds or more about the method (the model's seed-to-seed "
           "variance on the task, pooled over its variants, and the examples both count), with one seed about "
           "the checkpoint; Wilson at the effective number of examples for 0/1 scores, else a t interval "
           "(perplexity: delta method on the log scale). * mean ± t × standard error over seeds (no per-example "
           "scores: omits the example variance), † ± 1.96 × lm-eval's standard error (one seed; evaluate with "
           "--log-samples). A method marked 'did not learn' did not lower its training loss below its first logged "
           "loss (beyond the step-to-step noise) and its target score is not significantly above the base "
           "model's; 'diverged' had a non-finite loss; neither is ranked or in any family.")


def choosable(variant: str, status) -> bool:
    """A variant a user could pick: trained, not failed, not a selection control."""
    return variant != "base" and status not in FAILED and snr_counterpart(variant) is None


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
        ranked = sub[[choosable(v, st) for v, st in zip(sub.index, sub["status"])]]
        if len(ranked) > 1:  # one method that may be chosen is best of nothing
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
        status = agg.drop_duplicates("variant").set_index("variant")["status"]
        trained = values[[choosable(v, status.get(v)) for v in values.index]].dropna()
        if len(trained) > 1:
            best[col] = trained.idxmax() if key == "tokens_per_s" else trained.idxmin()
    table.index = [labels.get(v, v) for v in order]
    best = {col: labels.get(v, v) for col, v in best.items()}
    return table, best


def comparison_frame(comp: pd.DataFrame) -> pd.DataFrame:
    """One model's comparisons as strings: the difference with its family's interval, p and adjusted p, the
    outcome, and for an open comparison the power at the observed difference and the examples per seed for power
    0.8 (both at the row's level)."""
    rows = []
    for r in comp.itertuples():
        level = level_suffix(r.confidence)
        if r.family.startswith("cost"):
            outcome = f"shown within {_fmt(r.margin)}" if r.significant else f"not shown within {_fmt(r.margin)}"
        else:
            outcome = "significant" if r.significant else "inconclusive" if r.difference != 0 else "tie"
        rows.append({"method": r.variant, "against": r.reference, "task": r.task, "family": r.family,
                     "unit": r.unit, "difference [interval]": f"{r.difference:+.3g} [{_fmt(r.ci_low)}, "
                                                              f"{_fmt(r.ci_high)}]{level}",
                     "p": _p(r.p_value), "adjusted p": _p(r.p_adjusted), "outcome": outcome,
                     "power at observed": "–" if r.significant or math.isnan(r.power) else f"{r.power:.2f}",
                     "examples to settle": "–" if r.significant else
                     "– (further behind than the margin)" if r.family.startswith("cost") and math.isinf(r.examples_needed)
                     else _needed(r.examples_needed, r.difference)})
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


def summary_markdown(sections: list[dict], target: str) -> str:
    parts = ["# snrtune report\n",
             f"Results per model (runs of different models are never pooled). Target task: {target}.\n"]
    for s in sections:
        answer = "\n".join(f"- {line}" for line in s["verdict"])
        parts.append(f"## {s['model']}\n\n{answer}\n\n{markdown_table(s['table'], s['best'])}\n")
        if not s["comparisons"].empty:
            parts.append(f"{COMPARISON_NOTE}\n\n{comparison_markdown(s['comparisons'])}\n")
        if s.get("criteria_md"):  # the selection criteria against the SNR selection (snrtune.report.criteria)
            parts.append(s["criteria_md"])
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


def _bold(line: str) -> str:
    """A verdict line as HTML: escaped, **x** as <b>x</b>."""
    parts = html.escape(line).split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))


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
        comp += s.get("criteria_html", "")  # the selection criteria (snrtune.report.criteria)
        for key, title, note in (("settings", "Training settings", SETTINGS_NOTE),
                                 ("sweep", "Learning-rate sweep", SWEEP_NOTE)):
            if not s[key].empty:
                comp += f"<h3>{title}</h3><p>{html.escape(note)}</p>" + _html_table(s[key], {}, "method")
        blocks.append(f"<section><h2>{html.escape(str(s['model']))}</h2>"
                      "<ul class=\"verdict\">" + "".join(f"<li>{_bold(line)}</li>" for line in s["verdict"]) + "</ul>"
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
<p>{html.escape(CI_NOTE)} Every row of every run: <a href="{RUNS_TABLE}">{RUNS_TABLE}</a>; scores with intervals:
<a href="{SCORES_TABLE}">{SCORES_TABLE}</a>; comparisons: <a href="{COMPARISONS_TABLE}">{COMPARISONS_TABLE}</a>.</p>
</body></html>
"""
