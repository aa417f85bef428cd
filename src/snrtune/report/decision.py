"""One model's decision on one task from its variants' per-example scores: who wins, which cheaper methods are
shown to be as good within a declared margin, and the secondary comparisons (docs/evaluation.md, "How the report
decides"). Pure numpy on arrays: the report (snrtune.report.comparisons) and the calibration benchmark
(benchmarks/verdict_calibration.py) call the same ``decide``.

- **The winner** (the primary question, "which method is best?") is an intersection–union test: the contender
  with the best score wins only when its paired difference against every other contender is in its favour and
  significant at α, two-sided. No correction over the contenders is needed (a false claim needs the true best
  to lose a test that holds level α), and the 1 − α intervals printed beside it are the ones the words come from.
- **Secondary families**, each Bonferroni-corrected on its own (intervals at 1 − α/m, so words and intervals
  agree): every variant against the reference method (full fine-tuning), and every control against its SNR
  selection. They never decide the winner.
- **The cost answer is a non-inferiority test** against a declared margin δ: a contender is *shown within δ of the
  best* when, for every other contender c, the one-sided upper bound of c − j (oriented so that positive is
  better) at 1 − α/m is below δ (m = the contenders tested; Bonferroni). A non-significant difference is never
  read as "as good as".
- **Units of inference**: seed-level ("the methods") only when every contender has two distinct seeds or more and
  the model's checkpoint variance is measured; otherwise the claim is about these checkpoints, and says so.
  A seed whose per-example rows equal another's counts once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from snrtune.report import stats

PRIMARY = "primary: best vs each"
VS_REFERENCE = "secondary: vs reference"
CONTROL = "secondary: control vs SNR selection"
MARGIN = "cost answer: within the margin"
GAIN = "gain and retention"

METHOD, CONTROL_ROLE, FAILED_ROLE, BASE = "method", "control", "failed", "base"


@dataclass
class Arm:
    """A variant on one task: ``values`` (k seeds, n examples[, 2]) on the examples every arm shares; ``role``:
    method (may win), control (a selection control: compared with its SNR ``counterpart`` only), failed (did not
    learn, diverged: in no family) or base (the untouched model, one fixed model)."""
    name: str
    values: np.ndarray
    role: str = METHOD
    counterpart: str | None = None
    table: stats.Table | None = field(default=None, repr=False)  # prepared by ``prepared``

    def prepared(self, aggregation: str) -> "Arm":
        if self.table is None:
            self.table = stats.prepare(self.values, aggregation)
        return self


@dataclass
class Row:
    """One comparison as the report shows it: ``variant`` − ``reference`` in the metric's units."""
    family: str
    variant: str
    reference: str
    why: str
    comparison: stats.Comparison
    confidence: float  # of the printed interval
    p_adjusted: float
    significant: bool
    unit: str  # "seeds" or "checkpoints"
    family_size: int = 1
    alpha: float = stats.ALPHA  # the two-sided level each test of the family is run at
    examples_needed: float = math.nan
    power: float = math.nan
    margin: float | None = None

    @property
    def difference(self) -> float:
        return self.comparison.difference

    @property
    def ci_low(self) -> float:
        return self.comparison.low

    @property
    def ci_high(self) -> float:
        return self.comparison.high


@dataclass
class Decision:
    unit: str
    cv: stats.CheckpointVariance
    higher_is_better: bool
    scores: dict[str, float]
    seeds: dict[str, int]
    duplicates: dict[str, int]
    contenders: list[str]
    top: str | None = None
    winner: str | None = None
    outcome: str = "none"  # winner, only one, tie, wrong sign, inconclusive, withheld, none
    blocking: list[str] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    margin: float | None = None
    within_margin: list[str] = field(default_factory=list)

    def family(self, name: str) -> list[Row]:
        return [r for r in self.rows if r.family == name]


def _orient(difference: float, higher_is_better: bool) -> float:
    return difference if higher_is_better else -difference


def _unit_of(*arms: Arm, cv: stats.CheckpointVariance) -> str:
    varying = [a for a in arms if a.role != BASE]
    return "seeds" if cv.measured and varying and all(a.table.k >= 2 for a in varying) else "checkpoints"


def compare_arms(a: Arm, b: Arm, aggregation: str, cv: stats.CheckpointVariance, confidence: float,
                 unit: str | None = None) -> tuple[stats.Comparison, str]:
    """a − b at the seed level when both vary over two seeds or more (``unit`` forces one), else about these
    checkpoints."""
    a, b = a.prepared(aggregation), b.prepared(aggregation)
    unit = unit or _unit_of(a, b, cv=cv)
    comparison = stats.compare_tables(a.table, b.table, confidence, cv=cv if unit == "seeds" else None,
                                      b_fixed=b.role == BASE)
    return comparison, unit


def corrected_family(family: str, pairs: list[tuple[Arm, Arm, str, str]], cv_of, alpha: float = stats.ALPHA
                     ) -> list[Row]:
    """A Bonferroni family: ``pairs`` (a, b, why, aggregation), ``cv_of(aggregation)`` the checkpoint variance of
    the task; each interval at 1 − α/m, significant when it excludes 0."""
    m = len(pairs)
    level = alpha / max(1, m)
    rows = []
    for a, b, why, aggregation in pairs:
        comparison, unit = compare_arms(a, b, aggregation, cv_of(aggregation), 1 - level)
        p_adjusted = min(1.0, comparison.p_value * m)
        rows.append(Row(family, a.name, b.name, why, comparison, 1 - level, p_adjusted, p_adjusted < alpha, unit,
                        m, level, comparison.examples_needed(level), comparison.power(level)))
    return rows


def decide(arms: list[Arm], aggregation: str = "mean", higher_is_better: bool = True, reference: str | None = None,
           margin: float | None = None, alpha: float = stats.ALPHA) -> Decision:
    """The decision on one task (module docstring). ``arms`` share their examples; ``reference``: the method every
    variant is compared with (full fine-tuning); ``margin``: δ of the cost answer in the metric's units (None: no
    cost answer)."""
    arms = [a.prepared(aggregation) for a in arms]
    duplicates = {a.name: a.table.dropped for a in arms if a.table.dropped}
    by_name = {a.name: a for a in arms}
    scores = {a.name: a.table.score for a in arms}
    seeds = {a.name: a.table.k for a in arms}
    cv = stats.checkpoint_variance([a.table for a in arms if a.role in (METHOD, CONTROL_ROLE)], aggregation)
    contenders = [a.name for a in arms if a.role == METHOD]
    unit = "seeds" if cv.measured and contenders and all(seeds[c] >= 2 for c in contenders) else "checkpoints"
    out = Decision(unit, cv, higher_is_better, scores, seeds, duplicates, contenders, margin=margin)
    if contenders:
        out.top = max(contenders, key=lambda c: _orient(scores[c], higher_is_better))  # first of equals
        _primary(out, by_name, aggregation, alpha)
        _blocking(out, arms, by_name, aggregation, alpha)
    if reference in by_name and by_name[reference].role != FAILED_ROLE:
        pairs = [(a, by_name[reference], "vs " + reference, aggregation) for a in arms
                 if a.role in (METHOD, CONTROL_ROLE) and a.name != reference]
        out.rows += corrected_family(VS_REFERENCE, pairs, lambda _: cv, alpha)
    pairs = [(by_name[a.counterpart], a, "SNR vs control", aggregation) for a in arms
             if a.role == CONTROL_ROLE and a.counterpart in by_name and by_name[a.counterpart].role == METHOD]
    out.rows += corrected_family(CONTROL, pairs, lambda _: cv, alpha)
    if margin is not None and len(contenders) >= 2:
        _within_margin(out, by_name, aggregation, margin, alpha)
    return out


def _primary(out: Decision, by_name: dict[str, Arm], aggregation: str, alpha: float) -> None:
    """The top contender against each other: an intersection–union test at α, two-sided."""
    top, hib = out.top, out.higher_is_better
    others = [c for c in out.contenders if c != top]
    if not others:
        out.outcome = "only one"
        return
    unit = "seeds" if out.unit == "seeds" else "checkpoints"
    for c in others:
        comparison, _ = compare_arms(by_name[top], by_name[c], aggregation, out.cv, 1 - alpha, unit)
        ahead = _orient(comparison.difference, hib) > 0
        significant = ahead and comparison.p_value < alpha
        out.rows.append(Row(PRIMARY, top, c, "best vs other", comparison, 1 - alpha, comparison.p_value,
                            significant, unit, len(others), alpha, comparison.examples_needed(alpha),
                            comparison.power(alpha)))
    primary = out.family(PRIMARY)
    if any(r.difference == 0 for r in primary):
        out.outcome = "tie"
    elif any(_orient(r.difference, hib) < 0 for r in primary):
        out.outcome = "wrong sign"
    elif not all(r.significant for r in primary):
        out.outcome = "inconclusive"
    else:
        out.outcome, out.winner = "winner", top


def _blocking(out: Decision, arms: list[Arm], by_name: dict[str, Arm], aggregation: str, alpha: float) -> None:
    """A failed variant with scores withholds the winner's claim unless it is significantly worse than it."""
    if out.winner is None:
        return
    for arm in (a for a in arms if a.role == FAILED_ROLE):
        comparison, _ = compare_arms(by_name[out.winner], arm, aggregation, out.cv, 1 - alpha)
        if not (_orient(comparison.difference, out.higher_is_better) > 0 and comparison.p_value < alpha):
            out.blocking.append(arm.name)
    if out.blocking:
        out.outcome, out.winner = "withheld", None


def _within_margin(out: Decision, by_name: dict[str, Arm], aggregation: str, margin: float, alpha: float) -> None:
    """Non-inferiority of each contender j against every other (Bonferroni over the m contenders): j is shown within
    ``margin`` of the best when the lower bound of j − c (oriented) at 1 − α/m exceeds −margin for every c."""
    hib, contenders = out.higher_is_better, out.contenders
    m = len(contenders)
    level = alpha / m  # one-sided
    for j in contenders:
        worst = None
        for c in (c for c in contenders if c != j):
            comparison, unit = compare_arms(by_name[j], by_name[c], aggregation, out.cv, 1 - 2 * level, out.unit)
            lower = _orient(comparison.difference, hib) - stats.one_sided_quantile(comparison.df, 1 - level) * comparison.se
            if worst is None or lower < worst[0]:
                worst = (lower, c, comparison)
        lower, c, comparison = worst
        shown = lower > -margin
        gap = _orient(comparison.difference, hib) + margin  # distance from the margin's edge, at the observed
        p = stats.one_sided_p(gap, comparison.se, comparison.df)
        needed = comparison.examples_needed(2 * level, difference=gap) if gap > 0 else math.inf
        out.rows.append(Row(MARGIN, j, c, f"within {margin:g} of every other", comparison, 1 - 2 * level,
                            min(1.0, p * m), shown, out.unit, m, 2 * level, needed, math.nan, margin))
        if shown:
            out.within_margin.append(j)


def intervals(arms: list[Arm], aggregation: str = "mean", confidence: float = stats.CONFIDENCE
              ) -> dict[str, stats.Interval]:
    """Each arm's score interval: about the method (the model's pooled checkpoint variance on this task) when the
    arm has two distinct seeds or more and the variance is measured, else about these checkpoints."""
    tables = {a.name: a.prepared(aggregation).table if aggregation == "mean" else stats.prepare(a.values, aggregation, "ratio")
              for a in arms}
    cv = stats.checkpoint_variance([tables[a.name] for a in arms if a.role in (METHOD, CONTROL_ROLE)])
    return {a.name: stats.interval(tables[a.name], aggregation, confidence,
                                   cv if a.role != BASE and tables[a.name].k >= 2 else None) for a in arms}


def cheapest(decision: Decision, cost: dict[str, dict[str, float]], keys: tuple[str, ...]) -> dict[str, str]:
    """Per cost key (e.g. peak memory, GPU-hours), the cheapest of the contenders shown within the margin."""
    out = {}
    for key in keys:
        known = [(cost[v][key], v) for v in decision.within_margin
                 if v in cost and cost[v].get(key) is not None and not math.isnan(cost[v][key])]
        if known:
            out[key] = min(known)[1]
    return out
