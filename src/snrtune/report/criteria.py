"""Which criterion picks the modules worth training? Per model: a table of every selection criterion (snrtune.criteria)
against the SNR selection it mirrors, the overlap between the selections as a heatmap, and one verdict sentence
(docs/criteria.md).

The paired differences are the comparisons' rows (snrtune.report.comparisons) that set a control against its SNR
counterpart (``variants.snr_counterpart``), read by their variant/reference pair in either order, never by their
wording; when a pair appears in several families, the row of the family made of such pairs is used.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from snrtune import criteria
from snrtune import tasks as tasks_table
from snrtune.report.render import _fmt, _html_table, _human, _p, level_suffix, markdown_table
from snrtune.report.variants import snr_counterpart

NOTE = ("Selection criteria: Spectrum (and laser-QLoRA) trained on the modules each criterion ranks first, as many "
        "per module type as the SNR selection at the same t (the same trainable parameters in a dense model), "
        "with the SNR selection's settings. '− SNR' is the criterion's score minus the SNR selection's on the same "
        "examples and seeds, with its interval (95% unless a level is given: the family's corrected level) and "
        "p-value, raw and adjusted within its family; Δ columns are the change against the base model on each "
        "retention task. Overlap heatmap: the mean over module types "
        "of the Jaccard index of two selections' modules (1: the same modules).")


def pair_rows(comp: pd.DataFrame) -> pd.DataFrame:
    """The comparisons that set a control against its SNR counterpart (either way round), each pair once: from
    the family with the largest share of such pairs (the criteria family when it has its own)."""
    if comp.empty:
        return comp.assign(control=pd.Series(dtype=object), counterpart=pd.Series(dtype=object))
    rows = []
    for row in comp.itertuples(index=False):
        if snr_counterpart(row.variant) == row.reference:
            rows.append({**row._asdict(), "control": row.variant, "counterpart": row.reference, "sign": 1})
        elif snr_counterpart(row.reference) == row.variant:
            rows.append({**row._asdict(), "control": row.reference, "counterpart": row.variant, "sign": -1})
    if not rows:
        return comp.iloc[:0].assign(control=pd.Series(dtype=object), counterpart=pd.Series(dtype=object))
    pairs = pd.DataFrame(rows)
    share = pairs.groupby("family").size() / comp.groupby("family").size().reindex(pairs["family"].unique())
    pairs["share"] = pairs["family"].map(share)
    pairs = pairs.sort_values("share", ascending=False, kind="stable").drop_duplicates(["task", "control"])
    flip = pairs["sign"] < 0  # as control − SNR counterpart
    pairs.loc[flip, "difference"] = -pairs.loc[flip, "difference"]
    low, high = pairs["ci_low"].copy(), pairs["ci_high"].copy()
    pairs.loc[flip, "ci_low"], pairs.loc[flip, "ci_high"] = -high[flip], -low[flip]
    return pairs.drop(columns=["sign", "share"]).reset_index(drop=True)


def _kinds(runs: pd.DataFrame, model) -> dict[str, str]:
    """{variant: criterion} of one model's runs that train a selection."""
    here = runs[(runs.model == model) & runs.selection_kind.notna()] if "selection_kind" in runs else runs.iloc[:0]
    return dict(zip(here["variant"], here["selection_kind"]))


def _order(kind: str) -> int:
    names = criteria.names()
    return names.index(kind) if kind in names else len(names)


def criteria_table(runs: pd.DataFrame, agg: pd.DataFrame, comp: pd.DataFrame, cost: pd.DataFrame, target: str,
                   retention: list[str] | None = None) -> pd.DataFrame:
    """One model's criteria table (strings): per SNR selection with at least one control, a row for it and one per
    control: criterion, method, score on ``target`` [95% interval], the difference to the SNR selection [95%
    interval at the row's level], p and adjusted p, the change against the base model on each retention task,
    trainable parameters.
    Empty when the model has no control."""
    if agg.empty:
        return pd.DataFrame()
    model = agg["model"].iloc[0]
    kinds = _kinds(runs, model)
    on_target = agg[agg.task == target].set_index("variant")
    pairs = pair_rows(comp[comp.task == target]).set_index("control") if not comp.empty else pd.DataFrame()
    groups: dict[str, list[str]] = {}
    for variant in on_target.index:
        counterpart = snr_counterpart(variant)
        if counterpart is not None and counterpart in on_target.index:
            groups.setdefault(counterpart, []).append(variant)
    if not groups:
        return pd.DataFrame()
    hib = bool(on_target["higher_is_better"].iloc[0])
    metric = on_target["metric"].iloc[0]
    score_col = f"{target} ({metric} {'↑' if hib else '↓'})"
    rows = []
    for reference in sorted(groups):
        members = [reference] + sorted(groups[reference], key=lambda v: (_order(kinds.get(v, "")), v))
        for variant in members:
            a = on_target.loc[variant]
            kind = kinds.get(variant) or (criteria.REFERENCE if variant == reference else "?")
            known = criteria.find(kind)
            score = _fmt(a.score) + (f" [{_fmt(a.ci_low)}, {_fmt(a.ci_high)}]" if not math.isnan(a.ci_low) else "")
            row = {"SNR selection": reference, "criterion": known.label if known else kind, "method": variant,
                   score_col: score, "− SNR [interval]": "–", "p": "–", "adjusted p": "–"}
            if variant != reference and variant in pairs.index:
                pair = pairs.loc[variant]
                row.update({"− SNR [interval]": f"{pair.difference:+.3g}{_interval(pair)}", "p": _p(pair.p_value),
                            "adjusted p": _p(pair.p_adjusted)})
            for task in retention or []:
                here = agg[(agg.task == task) & (agg.variant == variant)]
                delta = here["delta_vs_base"].iloc[0] if not here.empty else math.nan
                row[f"Δ {task} vs base"] = "–" if math.isnan(delta) else f"{delta:+.3g}"
            trainable = cost["trainable_params"].get(variant, math.nan) if "trainable_params" in cost else math.nan
            row["trainable params"] = _human(trainable)
            rows.append(row)
    return pd.DataFrame(rows)


def _interval(row) -> str:
    """`` [low, high]`` of a comparison row, with its level when not 95 %; `` (untested)`` without one."""
    if math.isnan(row.ci_low):
        return " (untested)"
    return f" [{_fmt(row.ci_low)}, {_fmt(row.ci_high)}]{level_suffix(getattr(row, 'confidence', 0.95))}"


def criteria_verdict(comp: pd.DataFrame, target: str) -> str | None:
    """One sentence for one model (its rows of the comparisons table): which criteria picked modules that scored
    significantly better or worse than the SNR selection's on ``target`` (corrected within their family), or that
    none differed; None when the model has no control. For the verdict of snrtune.report.verdict."""
    pairs = pair_rows(comp[comp.task == target]) if not comp.empty else pd.DataFrame()
    if pairs.empty:
        return None
    hib = tasks_table.higher_is_better(target, pairs["metric"].iloc[0]) if "metric" in pairs else True

    def describe(row) -> str:
        return f"{row.control} ({row.difference:+.3g}{_interval(row).replace(' (untested)', '')}, adjusted p " \
               f"{_p(row.p_adjusted)})"

    better = [r for r in pairs.itertuples() if r.significant and (r.difference > 0) == hib]
    worse = [r for r in pairs.itertuples() if r.significant and (r.difference > 0) != hib]
    tied = [r for r in pairs.itertuples() if not r.significant]
    if not better and not worse:
        spread = ", ".join(f"{r.control} {r.difference:+.3g}" for r in tied)
        return (f"Selection criteria on {target}: no criterion's modules scored significantly differently from the "
                f"SNR selection's at equal trainable parameters ({spread}; corrected within their family), so this run "
                "cannot tell the criteria apart.")
    parts = [", ".join(map(describe, better)) + " beat it"] if better else []
    parts += [", ".join(map(describe, worse)) + " did worse"] if worse else []
    parts += [", ".join(r.control for r in tied) + " did not differ significantly"] if tied else []
    return (f"Selection criteria on {target} (each against the SNR selection at equal trainable parameters): "
            + "; ".join(parts) + ".")


# --- overlap -------------------------------------------------------------------------------------------------------

def selection_label(selection: dict) -> str:
    """A selection's criterion, with its seed when it has one (``random s1``)."""
    kind = selection.get("selection", criteria.REFERENCE)
    return kind + (f" s{selection['seed']}" if selection.get("seed") is not None else "")


def jaccard(a: dict, b: dict) -> float:
    """The mean over module types of the Jaccard index of two selections' per-layer modules (names and experts);
    NaN when they share no type."""
    def by_type(selection):
        out: dict[str, set] = {}
        for m in selection.get("modules", []):
            if m.get("layer") is not None:
                out.setdefault(m["type"], set()).add((m["name"], m.get("expert")))
        return out

    ta, tb = by_type(a), by_type(b)
    values = [len(ta.get(t, set()) & tb.get(t, set())) / len(ta.get(t, set()) | tb.get(t, set()))
              for t in set(ta) | set(tb)]
    return sum(values) / len(values) if values else math.nan


def overlap(selections: list[dict]) -> dict[str, pd.DataFrame]:
    """{``t25`` (or ``b…`` for a budget): criteria × criteria mean per-type Jaccard} for every size with at least
    two selections (criteria in table order)."""
    groups: dict[str, list[dict]] = {}
    for sel in selections:
        t, budget = sel.get("top_percent"), sel.get("budget_params")
        key = f"t{t:g}" if t is not None else f"b{budget}"
        groups.setdefault(key, []).append(sel)
    out = {}
    for key, members in groups.items():
        members = sorted(members, key=lambda s: (_order(s.get("selection", criteria.REFERENCE)),
                                                 s.get("seed") if s.get("seed") is not None else -1))
        labels = list(dict.fromkeys(selection_label(s) for s in members))
        if len(labels) < 2:
            continue
        first = {selection_label(s): s for s in reversed(members)}
        out[key] = pd.DataFrame([[jaccard(first[a], first[b]) for b in labels] for a in labels],
                                index=labels, columns=labels)
    return out


def write_overlap_heatmaps(folder: Path, slug: str, model: str, selections: list[dict]) -> list[tuple[str, str]]:
    """One heatmap PNG per selection size of one model's selections, as (file name, caption) pairs."""
    from snrtune.report import plots

    images = []
    for key, frame in overlap(selections).items():
        fig, ax = plots.plt.subplots(figsize=(1.0 * len(frame) + 2.5, 0.8 * len(frame) + 1.8))
        plots.sns.heatmap(frame, ax=ax, vmin=0, vmax=1, cmap="mako", annot=True, fmt=".2f", square=True,
                          cbar_kws={"label": "Jaccard (mean over module types)"})
        ax.set_title(f"{model}: overlap of the selections at {key}", fontsize=11)
        name = plots._save(fig, folder, f"criteria_overlap_{slug}_{key}.png")
        images.append((name, f"{model}: how far the criteria's selections at {key} overlap (mean per-type Jaccard)"))
    return images


# --- summary.md and report.html --------------------------------------------------------------------------------------

def section_markdown(table: pd.DataFrame, verdict: str | None) -> str:
    """The criteria block of summary.md ('' without controls)."""
    if table.empty:
        return ""
    return f"### Selection criteria\n\n{verdict or ''}\n\n{NOTE}\n\n{markdown_table(table.set_index('method'), {})}\n"


def section_html(table: pd.DataFrame, verdict: str | None) -> str:
    """The criteria block of report.html ('' without controls)."""
    import html

    if table.empty:
        return ""
    return (f"<h3>Selection criteria</h3><p>{html.escape(verdict or '')}</p><p>{html.escape(NOTE)}</p>"
            + _html_table(table.set_index("method"), {}, "method"))
