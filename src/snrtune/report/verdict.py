"""One model's verdict from its scores and comparisons (docs/evaluation.md, "How the report decides"), and
the choice of the target and retention tasks."""

from __future__ import annotations

import math

import pandas as pd

from snrtune import tasks as tasks_table
from snrtune.errors import SnrtuneError
from snrtune.report.comparisons import GAIN, RANKING
from snrtune.report.cost import FAILED, compute_hours, peak_memory
from snrtune.report.render import _fmt, _human, _needed, _p
from snrtune.report.variants import snr_counterpart
from snrtune.report.tables import variant_order

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
        parts.append("Not ranked: " + ", ".join(f"{v} ({r.status}{', not evaluated' if pd.isna(r.score) else ''})"
                                           for v, r in failed.iterrows()) + ". ")
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
    beaten_by_failed = [v for v, r in failed.iterrows()  # a diverged method without a score beats nothing
                        if pd.notna(r.score) and (r.score > w.score) == hib and r.score != w.score]
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
            need = ", ".join(f"{r.reference}: {_needed(r.examples_needed, r.difference)} (power now {r.power:.2f})"
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
