"""The verdict's calibration, re-checked on a small grid with fixed seeds through benchmarks/verdict_calibration.py
(which pushes simulated seeds × examples results through snrtune.report.decision.decide, the report's own
function). The full grid and its table: docs/evaluation.md."""

import importlib.util
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("verdict_calibration", ROOT / "benchmarks" / "verdict_calibration.py")
vc = sys.modules.setdefault("verdict_calibration", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(vc)


def _cell(metric, n, seeds, methods, spread, lead, reps, seed=0):
    return vc.run_cell(vc.Cell(metric, n, seeds, methods, spread, lead), reps, seed)


@pytest.mark.slow
@pytest.mark.parametrize("metric, n, seeds, spread", [
    ("acc", 1000, 2, 4),   # 2 degrees of freedom for the checkpoint variance: where Satterthwaite gave 10.6 %
    ("acc", 1000, 3, 4),   # the old test's 8.2 % cell
    ("acc", 258, 1, 0),    # one seed: the paired t-test over examples
    ("ppl", 60, 3, 2),
])
def test_two_equal_methods_are_named_winner_at_most_5_percent_of_the_time(metric, n, seeds, spread):
    row = _cell(metric, n, seeds, 2, spread, 0, 1500)
    assert row["false"] <= 0.05 + 2 * row["false_se"], row
    # the score intervals cover the truth (at 2 degrees of freedom for the checkpoint variance they are a little
    # conservative: about 0.97)
    assert 0.93 <= row["coverage"] <= 0.99, row


@pytest.mark.slow
def test_a_20_point_lead_among_8_methods_with_3_seeds_is_named():
    """The issue's case: n = 258, 8 methods, 3 seeds, checkpoint spread 3 points (Holm over 14 comparisons named
    it 8 % of the time)."""
    row = _cell("acc", 258, 3, 8, 3, 20, 150)
    assert row["power"] >= 0.9 and row["false"] == 0


@pytest.mark.slow
def test_power_is_at_least_0_6_of_the_oracles():
    row = _cell("acc", 1000, 3, 5, 2, 10, 300)
    assert row["oracle_power"] >= 0.5 and row["power"] >= 0.6 * row["oracle_power"], row


@pytest.mark.slow
def test_without_checkpoint_spread_three_seeds_never_have_less_power_than_one():
    three, one = _cell("acc", 258, 3, 2, 0, 5, 400), _cell("acc", 258, 1, 2, 0, 5, 400)
    se = math.sqrt(three["power"] * (1 - three["power"]) / 400 + one["power"] * (1 - one["power"]) / 400)
    assert three["power"] >= one["power"] - 2 * se, (three, one)


@pytest.mark.slow
def test_the_cost_answer_never_takes_a_method_5_points_behind_for_one_as_good():
    """The leader (the most expensive) is 5 points ahead of 4 cheaper methods — exactly the margin: naming one of
    them is an error, and the non-inferiority test keeps it at α."""
    row = _cell("acc", 258, 3, 5, 2, 5, 400)
    assert row["cost_error"] <= 0.05, row
    wide = _cell("acc", 60, 1, 2, 0, 10, 400)  # 10 points behind at n = 60: the 72 % case
    assert wide["cost_error"] <= 0.05, wide


def test_the_criteria_flag_what_misses_them():
    cell = vc.Cell("acc", 258, 3, 8, 3, 20)
    assert vc.verdict_of({"cell": cell, "false": 0.2, "false_se": 0.01, "power": 0.5, "oracle_power": 1.0}) == [
        "false winners > 5%", "power < 0.6 × oracle", "20-point lead named < 90%"]
    assert vc.verdict_of({"cell": cell, "false": 0.055, "false_se": 0.005, "power": 0.95, "oracle_power": 1.0}) == []
