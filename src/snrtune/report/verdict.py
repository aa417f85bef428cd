"""One model's verdict — the answer first, in at most six short lines — from its decision (snrtune.report.decision
via snrtune.report.comparisons), and the choice of the target and retention tasks (docs/evaluation.md, "How the
report decides"). The lines: the winner or why there is none; the cheapest methods shown within the margin of
the best; SNR selection against its controls; the retention cost; what was not ranked; warnings. The tests behind
every line are rows of the comparisons table."""

from __future__ import annotations

import math

import pandas as pd

from snrtune import tasks as tasks_table
from snrtune.errors import SnrtuneError
from snrtune.report.comparisons import ModelResult
from snrtune.report.cost import FAILED, compute_hours, peak_memory
from snrtune.report.decision import CONTROL, GAIN, MARGIN, PRIMARY, cheapest
from snrtune.report.render import _fmt, _human, _needed, level_suffix

MAX_LINES = 6


def pick_target(tasks: list[str], requested: str | None) -> str:
    if requested:
        if requested not in tasks:
            raise SnrtuneError(f"--target-task {requested!r} was not evaluated; expected one of {', '.join(tasks)}")
        return requested
    return tasks_table.default_target(tasks)


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


def _diff(row) -> str:
    """'+0.083 [0.021, 0.145]' with the row's interval (its family's level)."""
    return f"{row.difference:+.3g} [{_fmt(row.ci_low)}, {_fmt(row.ci_high)}]{level_suffix(row.confidence, 'at')}"


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
    return (f"No method is ranked: the runs were trained with different budgets ({'; '.join(parts)}), and an "
            "equal number of examples per step and steps is the premise of the comparison.")


def _winner_line(result: ModelResult, sub: pd.DataFrame, target: str, metric: str) -> str:
    d = result.decision
    if d is None or d.top is None:
        trained = sub.drop("base", errors="ignore")
        ranked = trained[~trained["status"].isin(FAILED)]
        if ranked.empty:
            return "No method can be ranked on this model."
        top = ranked["score"].idxmax() if bool(sub["higher_is_better"].iloc[0]) else ranked["score"].idxmin()
        return (f"No winner on {target}: {top} has the best {metric} ({_interval(sub.loc[top])}), but without "
                "per-example scores for every method nothing is tested (evaluate with --log-samples).")
    top, w = d.top, sub.loc[d.top]
    score = f"{metric} {_interval(w)}"
    seeds = "one seed per method" if max(d.seeds[c] for c in d.contenders) == 1 else \
        "/".join(str(k) for k in sorted({d.seeds[c] for c in d.contenders})) + " seeds"
    checkpoints = d.unit == "checkpoints"
    about = (f" ({seeds}: a claim about these checkpoints, not the methods)" if checkpoints else f" ({seeds})")
    primary = d.family(PRIMARY)
    if d.outcome == "only one":
        return f"{top} is the only method that can be ranked on {target} ({score}); nothing to compare it with."
    if d.outcome == "winner":
        closest = min(primary, key=lambda r: abs(r.difference))
        lead = "scored highest of these checkpoints" if checkpoints else "wins"
        return (f"**{top}** {lead} on {target} ({score}): ahead of every other method, each paired difference "
                f"significant; the closest, {closest.reference}, by {_diff(closest)}{about}.")
    if d.outcome == "withheld":
        return (f"No winner on {target}: {top} is significantly ahead of every method that can be ranked, but "
                f"{', '.join(d.blocking)} (not ranked) is not significantly worse than it, so the claim is "
                f"withheld{about}.")
    if d.outcome == "tie":
        tied = [r.reference for r in primary if r.difference == 0]
        return f"No winner on {target}: {top} and {', '.join(tied)} tie at {metric} {_fmt(w.score)}{about}."
    if d.outcome == "wrong sign":
        against = [r for r in primary if (r.difference > 0) != d.higher_is_better]
        return (f"No winner on {target}: {top} ranks first but its paired difference is not in its favour against "
                + ", ".join(f"{r.reference} ({_diff(r)})" for r in against) + f"{about}.")
    open_ = [r for r in primary if not r.significant]
    need = ", ".join(f"{r.reference} {_needed(r.examples_needed, r.difference)}" for r in open_)
    return (f"No winner on {target}: {top} has the best {score} but is not significantly ahead of "
            + ", ".join(f"{r.reference} ({_diff(r)})" for r in open_)
            + f"; examples per seed that would separate them at the observed differences: {need}{about}.")


def _cost_line(result: ModelResult, cost: pd.DataFrame, metric: str) -> str | None:
    d = result.decision
    if d is None or len(d.contenders) < 2:
        return None
    if result.margin is None:
        return ("No cost answer: no margin is declared for this metric (report.margin, or report.margin_of_gain with "
                "a base model evaluated).")
    margin = f"{_fmt(result.margin)} {metric}"
    memory, memory_label = peak_memory(cost) if not cost.empty else (pd.Series(dtype=float), "peak memory")
    hours, hours_label = compute_hours(cost) if not cost.empty else (pd.Series(dtype=float), "GPU-hours")
    table = {v: {"memory": memory.get(v, math.nan), "hours": hours.get(v, math.nan)} for v in d.contenders}
    cheaper = [v for v in d.within_margin if v != d.top]
    if cheaper:
        named = cheapest(d, table, ("memory", "hours"))
        said = []
        if "memory" in named:
            said.append(f"in {memory_label} {named['memory']} ({_human(table[named['memory']]['memory'])}B)")
        if "hours" in named:
            said.append(f"in {hours_label.split(' (')[0]} {named['hours']} ({table[named['hours']]['hours']:.3g})")
        return (f"Shown within {margin} of the best (non-inferiority, one-sided at α/{len(d.contenders)}): "
                f"{', '.join(d.within_margin)}; the cheapest of them " + ("; ".join(said) or "–") + ".")
    others = [r for r in d.family(MARGIN) if r.variant != d.top]
    closest = min(others, key=lambda r: r.examples_needed) if others else None
    if closest is not None and math.isfinite(closest.examples_needed):
        hint = (f"; the closest, {closest.variant}, would need {_needed(closest.examples_needed)} examples per seed "
                "at the observed difference")
    else:
        hint = f"; every other method is further behind than {margin} at the observed differences"
    n = d.family(MARGIN)[0].comparison.n_examples if d.family(MARGIN) else None
    if d.within_margin:
        head = f"No cheaper method is shown within {margin} of the best, {d.top}, at {n} examples"
    else:
        head = f"No method is shown within {margin} of every other at {n} examples"
    return (f"{head}{hint}; a difference that is not significant is not evidence that two methods are as "
            "good.")


def _control_line(result: ModelResult) -> str | None:
    d = result.decision
    rows = d.family(CONTROL) if d else []
    if not rows:
        return None
    said = []
    for r in rows:
        snr_ahead = (r.difference > 0) == d.higher_is_better
        outcome = ("inconclusive" if not r.significant else
                   "SNR significantly better" if snr_ahead else "control significantly better")
        unit = " (one seed: about these checkpoints)" if r.unit == "checkpoints" else ""
        said.append(f"{r.variant} − {r.reference} = {_diff(r)}: {outcome}{unit}")
    correction = f", Bonferroni over {len(rows)}" if len(rows) > 1 else ""
    return f"SNR selection vs its control at equal parameters{correction}: " + "; ".join(said) + "."


def _retention_line(comp: pd.DataFrame, retention: list[str], higher_is_better: dict[str, bool]) -> str | None:
    """Per retention task, which methods lost or gained significantly against the base model."""
    rows = comp[(comp.family == GAIN) & comp.task.isin(retention)]
    if rows.empty:
        return None
    parts = []
    for task in [t for t in retention if t in set(rows.task)]:
        t = rows[rows.task == task]
        significant = t.significant.astype(bool)
        worse = t[significant & ((t.difference < 0) == higher_is_better[task]) & (t.difference != 0)]
        better = t[significant].drop(worse.index)
        same = t[~t.significant.astype(bool)]
        if len(worse) == len(t):
            least = worse.loc[worse.difference.abs().idxmin()]
            parts.append(f"{task}: lost by every method (least: {least.variant} {least.difference:+.3g})")
            continue
        bits = []
        if not worse.empty:
            bits.append("lost by " + ", ".join(f"{r.variant} {r.difference:+.3g}" for r in worse.itertuples()))
        if not better.empty:
            bits.append("gained by " + ", ".join(f"{r.variant} {r.difference:+.3g}" for r in better.itertuples()))
        if not same.empty:
            bits.append("no significant change for " + ", ".join(same.variant))
        parts.append(f"{task}: " + "; ".join(bits))
    size = int(comp.loc[comp.family == GAIN, "family_size"].iloc[0])
    return f"Retention against the base model (Bonferroni over the {size} gain and retention tests): " + \
        ". ".join(parts) + "."


def _notes_line(sub: pd.DataFrame, result: ModelResult) -> str | None:
    trained = sub.drop("base", errors="ignore")
    failed = trained[trained["status"].isin(FAILED)]
    notes = []
    if not failed.empty:
        notes.append("Not ranked: " + ", ".join(
            f"{v} ({r.status}{', not evaluated' if pd.isna(r.score) else ''})" for v, r in failed.iterrows()) + ".")
    if result.rescued:
        notes.append(f"{', '.join(result.rescued)}: the training loss did not clearly fall, but the target score is "
                     "significantly above the base model's, so it is ranked.")
    d = result.decision
    if d is not None and d.duplicates:
        notes.append("Seeds with identical per-example scores count once: " + ", ".join(
            f"{v} ({k} of its seeds)" for v, k in d.duplicates.items()) + ".")
    return " ".join(notes) or None


def verdict(agg: pd.DataFrame, comp: pd.DataFrame, cost: pd.DataFrame, target: str, tasks: list[str],
            result: ModelResult, retention: list[str] | None = None) -> list[str]:
    """One model's verdict as at most six lines (module docstring)."""
    retention = [t for t in tasks if t != target] if retention is None else retention
    sub = agg[agg.task == target].set_index("variant")
    trained = sub.drop("base", errors="ignore")
    if trained.empty:
        return [f"Only the base model was evaluated; no fine-tuning method to compare on {target}."]
    higher_is_better = {t: bool(g["higher_is_better"].iloc[0]) for t, g in agg.groupby("task")}
    metric = sub["metric"].iloc[0]
    budgets = _budgets_differ(trained[~trained["status"].isin(FAILED)])
    lines = [budgets] if budgets else [_winner_line(result, sub, target, metric), _cost_line(result, cost, metric)]
    lines += [_control_line(result), _retention_line(comp, retention, higher_is_better), _notes_line(sub, result)]
    lines = [line for line in lines if line]
    return lines[:MAX_LINES]
