"""The paired comparisons, per model, in two pre-declared Holm families (docs/evaluation.md, "How the report
decides"): ranking on the target task, and gain and retention against the base model."""

from __future__ import annotations

import math

import pandas as pd

from snrtune.report import stats
from snrtune.report.cost import FAILED
from snrtune.report.tables import seed_matrix
from snrtune.report.variants import snr_counterpart


RANKING, GAIN = "ranking", "gain and retention"


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


def contenders(agg_model: pd.DataFrame) -> list[str]:
    """Trained variants that may be ranked: not the base model, not failed (diverged, did not learn)."""
    return [v for v, s in zip(agg_model["variant"], agg_model["status"]) if v != "base" and s not in FAILED]


def ranking_scores(scores: pd.DataFrame, names: list[str]) -> pd.Series:
    """Each contender's mean score over the seeds every contender has (the seeds the paired tests use); over
    all its seeds when the contenders share none."""
    sub = scores[scores.variant.isin(names)]
    seeds = [set(sub.loc[sub.variant == v, "seed"]) for v in names]
    common = set.intersection(*seeds) if seeds else set()
    if common:
        sub = sub[sub.seed.isin(common)]
    return sub.groupby("variant")["score"].mean().reindex(names)


def comparison_pairs(agg_model: pd.DataFrame, best: str | None) -> list[tuple[str, str, str]]:
    """The pre-declared ranking family on one model's target task: the best contender against every other
    contender, every trained method against full fine-tuning, each control against its SNR selection."""
    variants = [v for v in agg_model["variant"] if v != "base"]
    pairs: dict[frozenset, tuple[str, str, str]] = {}

    def add(a, b, why):
        key = frozenset((a, b))
        if a != b and key not in pairs:
            pairs[key] = (a, b, why)
        elif a != b and why not in pairs[key][2]:
            pairs[key] = (*pairs[key][:2], pairs[key][2] + ", " + why)

    if best is not None:
        for v in contenders(agg_model):
            add(best, v, "best vs other")
    if "full" in variants:
        for v in variants:
            add(v, "full", "vs full")
    for v in variants:
        counterpart = snr_counterpart(v)
        if counterpart in variants:
            add(counterpart, v, "SNR vs control")
    return list(pairs.values())


def _compare(scores: pd.DataFrame, index: dict, task: str, metric: str, a: str, b: str) -> dict:
    """One paired comparison's row (without Holm): the crossed-design test on the common seeds and examples,
    else only the difference of the means (untested)."""
    row = {"difference": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan,
           "n_examples": None, "n_seeds": None, "result": None}
    paired = paired_runs(scores, a, b)
    da = db = None
    if paired:
        da = seed_matrix(index, paired[0], task, metric)
        db = seed_matrix(index, paired[1], task, metric, docs=da[2] if da else None)
        if da is not None and db is not None and da[2] != db[2]:
            da = seed_matrix(index, paired[0], task, metric, docs=db[2])
    if da is not None and db is not None:
        result = stats.compare(da[0], db[0], da[1])
        row.update(difference=result.difference, ci_low=result.low, ci_high=result.high, p_value=result.p_value,
                   n_examples=result.n_examples, n_seeds=result.n_seeds, result=result)
    else:
        means = scores.groupby("variant")["score"].mean()
        row["difference"] = means[a] - means[b]
    return row


def _holm(family: list[dict]) -> None:
    """Holm over one family; power and examples needed at α/m, the level Holm's first step uses."""
    tested = [r for r in family if not math.isnan(r["p_value"])]
    level = stats.ALPHA / max(1, len(tested))
    for r, adjusted in zip(tested, stats.holm([r["p_value"] for r in tested]) if tested else []):
        r["p_holm"] = float(adjusted)
    for r in family:
        r.setdefault("p_holm", math.nan)
        r["significant"] = bool(r["p_holm"] < stats.ALPHA) if not math.isnan(r["p_holm"]) else None
        result = r.pop("result")
        r["family_size"], r["level"] = len(tested), level
        r["power"] = result.power(level) if result else math.nan
        r["examples_needed"] = result.examples_needed(level) if result else math.nan


def comparisons(scores: pd.DataFrame, agg: pd.DataFrame, index: dict, target: str,
                retention: list[str]) -> pd.DataFrame:
    """Per model, two Holm families. ``ranking`` (target task): best contender vs each other contender, each
    method vs full, each control vs its SNR selection. ``gain and retention``: each trained method against the
    base model on the target task and on every retention task. Per row: difference (variant − reference, in the
    metric's units), its 95 % interval, the p-value, Holm-adjusted within the family, the power at the observed
    difference and the examples per seed for power 0.8, both at α/m."""
    rows = []
    scored = agg[agg["score"].notna()]  # a diverged variant without scores has nothing to compare
    for model, agg_model in scored.groupby("model", sort=False, dropna=False):
        here = scores[scores.model == model]
        on_target = agg_model[agg_model.task == target]
        if on_target.empty:
            continue
        metric = on_target["metric"].iloc[0]
        names = contenders(on_target)
        best = None
        if names:
            ranked = ranking_scores(here[here.task == target], names)
            best = ranked.idxmax() if bool(on_target["higher_is_better"].iloc[0]) else ranked.idxmin()
        families = {RANKING: [(target, a, b, why) for a, b, why in comparison_pairs(on_target, best)], GAIN: []}
        if "base" in set(on_target.variant):
            for task in [target, *retention]:
                t = agg_model[agg_model.task == task]
                if "base" in set(t.variant):
                    families[GAIN] += [(task, v, "base", "target gain" if task == target else "retention change")
                                       for v in t.variant if v != "base"]
        for family, pairs in families.items():
            done = []
            for task, a, b, why in pairs:
                task_metric = metric if task == target else agg_model.loc[agg_model.task == task, "metric"].iloc[0]
                sub = here[here.task == task]
                done.append({"model": model, "task": task, "metric": task_metric, "family": family, "variant": a,
                             "reference": b, "why": why, "best": a == best and why.startswith("best"),
                             **_compare(sub, index, task, task_metric, a, b)})
            _holm(done)
            rows += done
    columns = ["model", "task", "metric", "family", "variant", "reference", "why", "best", "difference", "ci_low",
               "ci_high", "p_value", "p_holm", "significant", "n_examples", "n_seeds", "family_size", "level",
               "power", "examples_needed"]
    return pd.DataFrame(rows, columns=columns)
