"""The paired comparisons of each model (docs/evaluation.md, "How the report decides"): the decision on the target
task (snrtune.report.decision: the winner by an intersection–union test, the secondary families, the cost answer
by non-inferiority) and the gain-and-retention family against the base model, as one table."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from snrtune import method_registry
from snrtune.report import decision as decide_module
from snrtune.report import stats
from snrtune.report.cost import FAILED
from snrtune.report.decision import BASE, CONTROL_ROLE, FAILED_ROLE, GAIN, METHOD, Arm, Decision, Row
from snrtune.report.tables import seed_matrix
from snrtune.report.variants import snr_counterpart

PROPORTION_MARGIN = 0.05  # the cost answer's default margin for a proportion (accuracy, exact match): 5 points
GAIN_FRACTION = 0.25  # else: a quarter of the best method's gain over the base model

COLUMNS = ["model", "task", "metric", "family", "variant", "reference", "why", "best", "unit", "difference",
           "ci_low", "ci_high", "confidence", "p_value", "p_adjusted", "significant", "n_examples", "n_seeds",
           "family_size", "level", "power", "examples_needed", "margin"]


@dataclass
class ModelResult:
    """One model's decision on the target task (None without per-example scores for every contender), its rows,
    the variants whose "did not learn" status the target gain overturned, and notes for the verdict."""
    decision: Decision | None
    rows: list[dict] = field(default_factory=list)
    rescued: list[str] = field(default_factory=list)
    margin: float | None = None
    margin_rule: str = ""


def role_of(variant: str, status: str | None) -> str:
    if variant == "base":
        return BASE
    if status in FAILED:
        return FAILED_ROLE
    if snr_counterpart(variant) is not None:
        return CONTROL_ROLE
    return METHOD


def arms_for(scores: pd.DataFrame, index: dict, task: str, metric: str, variants: list[str],
             statuses: dict[str, str | None]) -> tuple[list[Arm], str] | None:
    """The variants' per-example scores on ``task`` on the examples all of them were scored on (their runs as
    seeds), as decision arms; None when a variant has no per-example scores or they share no example."""
    runs = {v: list(scores.loc[(scores.variant == v) & (scores.task == task) & scores["score"].notna(), "run"])
            for v in variants}
    runs = {v: r for v, r in runs.items() if r}
    if not runs:
        return None
    everything = seed_matrix(index, [r for rs in runs.values() for r in rs], task, metric)
    if everything is None:
        return None
    docs, aggregation = everything[2], everything[1]
    arms = []
    for variant, run_ids in runs.items():
        values, _, _ = seed_matrix(index, run_ids, task, metric, docs=docs)
        arms.append(Arm(variant, values, role_of(variant, statuses.get(variant)), snr_counterpart(variant)))
    return arms, aggregation


def margin_of(metric_is_proportion: bool, higher_is_better: bool, scores: dict[str, float], contenders: list[str],
              margin: float | None, margin_of_gain: float | None) -> tuple[float | None, str]:
    """δ of the cost answer and how it was set: ``margin`` (metric units) when given, else ``margin_of_gain`` (or,
    for a metric that is not a proportion, the default fraction) of the best contender's gain over the base model,
    else 5 points for a proportion; None when nothing declares one (no base model to measure a gain)."""
    if margin is not None:
        return margin, f"report.margin {margin:g}"
    if margin_of_gain is None and metric_is_proportion:
        return PROPORTION_MARGIN, f"{PROPORTION_MARGIN:g} (5 points, the default for a proportion)"
    fraction = GAIN_FRACTION if margin_of_gain is None else margin_of_gain
    if "base" not in scores or not contenders:
        return None, ""
    sign = 1 if higher_is_better else -1
    gain = max(sign * (scores[c] - scores["base"]) for c in contenders)
    if gain <= 0:
        return None, ""
    return fraction * gain, f"{fraction:g} × the best method's gain over the base model ({gain:.3g})"


def is_proportion(arms: list[Arm], aggregation: str) -> bool:
    """A score that is the share of examples right: per-example values all 0 or 1."""
    return aggregation == "mean" and all(np.isin(arm.values, (0.0, 1.0)).all() for arm in arms)


def _row(model: str, task: str, metric: str, row: Row, best: str | None) -> dict:
    c = row.comparison
    return {"model": model, "task": task, "metric": metric, "family": row.family, "variant": row.variant,
            "reference": row.reference, "why": row.why, "best": row.variant == best and row.family == decide_module.PRIMARY,
            "unit": row.unit, "difference": c.difference, "ci_low": c.low, "ci_high": c.high,
            "confidence": row.confidence, "p_value": c.p_value, "p_adjusted": row.p_adjusted,
            "significant": row.significant, "n_examples": c.n_examples, "n_seeds": f"{c.n_seeds[0]}/{c.n_seeds[1]}",
            "family_size": row.family_size, "level": row.alpha, "power": row.power,
            "examples_needed": row.examples_needed, "margin": row.margin}


def analyse_model(model: str, scores: pd.DataFrame, agg: pd.DataFrame, index: dict, target: str,
                  retention: list[str], margin: float | None = None, margin_of_gain: float | None = None
                  ) -> ModelResult:
    """One model: the decision on ``target``, the gain-and-retention family, the rescued statuses."""
    here, a = scores[scores.model == model], agg[(agg.model == model) & agg["score"].notna()]
    on_target = a[a.task == target]
    if on_target.empty:
        return ModelResult(None)
    metric, hib = on_target["metric"].iloc[0], bool(on_target["higher_is_better"].iloc[0])
    statuses = dict(zip(on_target["variant"], on_target["status"]))
    built = arms_for(here, index, target, metric, list(on_target["variant"]), statuses)
    result = ModelResult(None)
    if built is None:
        return result
    arms, aggregation = built
    by_name = {arm.name: arm for arm in arms}
    cv = stats.checkpoint_variance([arm.values for arm in arms if arm.role in (METHOD, CONTROL_ROLE)], aggregation)
    if "base" in by_name:  # a run flagged "did not learn" whose target score is significantly above the base's learned
        for arm in arms:
            if statuses.get(arm.name) == "did not learn":
                comparison, _ = decide_module.compare_arms(arm, by_name["base"], aggregation, cv, 1 - stats.ALPHA)
                if (comparison.difference > 0) == hib and comparison.difference != 0 \
                        and comparison.p_value < stats.ALPHA:
                    result.rescued.append(arm.name)
                    arm.role = CONTROL_ROLE if snr_counterpart(arm.name) is not None else METHOD
    contenders = [arm.name for arm in arms if arm.role == METHOD]
    scores_now = {arm.name: arm.prepared(aggregation).table.score for arm in arms}
    result.margin, result.margin_rule = margin_of(is_proportion(arms, aggregation), hib, scores_now, contenders, margin,
                                                  margin_of_gain)
    d = decide_module.decide(arms, aggregation, hib, reference=method_registry.reference(), margin=result.margin)
    result.decision = d
    result.rows = [_row(model, target, metric, row, d.top) for row in d.rows]
    result.rows += _gain_rows(model, here, a, index, target, retention, result.rescued)
    return result


def _gain_rows(model: str, scores: pd.DataFrame, agg: pd.DataFrame, index: dict, target: str,
               retention: list[str], rescued: list[str]) -> list[dict]:
    """Each trained variant that did not fail against the base model on the target and every retention task: one
    Bonferroni family over all of them."""
    pairs, metrics = [], {}
    for task in [target, *retention]:
        t = agg[agg.task == task]
        if "base" not in set(t.variant):
            continue
        metric = t["metric"].iloc[0]
        statuses = {v: ("learned" if v in rescued else s) for v, s in zip(t["variant"], t["status"])}
        built = arms_for(scores, index, task, metric, list(t["variant"]), statuses)
        if built is None:
            continue
        arms, aggregation = built
        by_name = {arm.name: arm for arm in arms}
        cv = stats.checkpoint_variance([a.values for a in arms if a.role in (METHOD, CONTROL_ROLE)], aggregation)
        why = "target gain" if task == target else "retention change"
        for arm in arms:
            if arm.role in (METHOD, CONTROL_ROLE) and "base" in by_name:
                pairs.append((arm, by_name["base"], why, aggregation, cv))
                metrics[id(arm)] = (task, metric)
    m = len(pairs)
    rows = []
    for arm, base, why, aggregation, cv in pairs:
        level = stats.ALPHA / max(1, m)
        comparison, unit = decide_module.compare_arms(arm, base, aggregation, cv, 1 - level)
        p_adjusted = min(1.0, comparison.p_value * m)
        row = Row(GAIN, arm.name, "base", why, comparison, 1 - level, p_adjusted, p_adjusted < stats.ALPHA, unit, m,
                  level, comparison.examples_needed(level), comparison.power(level))
        task, metric = metrics[id(arm)]
        rows.append(_row(model, task, metric, row, None))
    return rows


def comparisons(scores: pd.DataFrame, agg: pd.DataFrame, index: dict, target: str, retention: list[str],
                margin: float | None = None, margin_of_gain: float | None = None
                ) -> tuple[pd.DataFrame, dict[str, ModelResult]]:
    """Per model (never pooled): the comparisons table (one row per test; ``family`` says which family and
    correction, ``confidence`` the level of its interval) and each model's ModelResult."""
    results, rows = {}, []
    for model in dict.fromkeys(agg["model"]):
        result = analyse_model(model, scores, agg, index, target, retention, margin, margin_of_gain)
        results[model] = result
        rows += result.rows
    return pd.DataFrame(rows, columns=COLUMNS), results
