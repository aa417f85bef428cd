"""The report's selection-criteria section (snrtune.report.criteria): control-vs-SNR rows read from the comparisons
by their pair in either order, the table's numbers, the Jaccard overlap and the verdict sentence."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from snrtune.report import stats
from snrtune.report.criteria import criteria_table, criteria_verdict, jaccard, overlap, pair_rows

COLUMNS = ["model", "task", "metric", "family", "variant", "reference", "why", "difference", "ci_low", "ci_high",
           "p_value", "p_adjusted", "significant", "confidence"]


def comparison(variant, reference, difference, family="criteria", p=0.5, significant=False, task="snrtune_toolcall"):
    return {"model": "m", "task": task, "metric": "acc", "family": family, "variant": variant, "reference": reference,
            "why": "any wording", "difference": difference, "ci_low": difference - 0.1, "ci_high": difference + 0.1,
            "p_value": p, "p_adjusted": min(1.0, 2 * p), "significant": significant, "confidence": 0.95}


def test_pair_rows_read_either_order_and_prefer_the_family_of_control_pairs():
    comp = pd.DataFrame([
        comparison("spectrum-random-t25", "spectrum-t25", 0.2, family="ranking"),      # best vs other: control first
        comparison("spectrum-random-t25", "full", 0.1, family="ranking"),
        comparison("spectrum-t25", "spectrum-random-t25", -0.21, family="criteria"),   # the criteria family: SNR first
        comparison("spectrum-t25", "spectrum-kappa-t25", 0.05, family="criteria"),
        comparison("spectrum-t25", "base", 0.3, family="gain and retention"),
    ], columns=COLUMNS)
    pairs = pair_rows(comp).set_index("control")
    assert set(pairs.index) == {"spectrum-random-t25", "spectrum-kappa-t25"}
    assert set(pairs.counterpart) == {"spectrum-t25"}
    random = pairs.loc["spectrum-random-t25"]
    assert random.family == "criteria" and random.difference == pytest.approx(0.21)  # control − SNR
    assert (random.ci_low, random.ci_high) == pytest.approx((0.11, 0.31))  # the interval turned round with it
    assert pairs.loc["spectrum-kappa-t25"].difference == pytest.approx(-0.05)


def test_the_table_holds_the_paired_difference_retention_and_parameters():
    rng = np.random.default_rng(0)
    snr, kappa = rng.random((2, 60)) < 0.6, rng.random((2, 60)) < 0.4
    paired = stats.compare(kappa.astype(float), snr.astype(float))
    agg = pd.DataFrame([
        {"model": "m", "variant": v, "task": task, "metric": "acc", "higher_is_better": True, "score": score,
         "ci_low": score - 0.1, "ci_high": score + 0.1, "delta_vs_base": delta}
        for v, score, deltas in (("base", 0.1, (math.nan, math.nan)), ("spectrum-t25", snr.mean(), (0.5, -0.02)),
                                 ("spectrum-kappa-t25", kappa.mean(), (0.3, -0.05)))
        for task, delta in zip(("snrtune_toolcall", "snrtune_retention"), deltas)])
    comp = pd.DataFrame([comparison("spectrum-t25", "spectrum-kappa-t25", -paired.difference, p=paired.p_value)
                         | {"ci_low": -paired.high, "ci_high": -paired.low}], columns=COLUMNS)
    runs = pd.DataFrame({"model": "m", "variant": ["spectrum-t25", "spectrum-kappa-t25"],
                         "selection_kind": ["snr", "kappa"]})
    cost = pd.DataFrame({"trainable_params": [2.5e6, 2.5e6]}, index=["spectrum-t25", "spectrum-kappa-t25"])
    table = criteria_table(runs, agg, comp, cost, "snrtune_toolcall", ["snrtune_retention"]).set_index("method")
    assert list(table.index) == ["spectrum-t25", "spectrum-kappa-t25"]
    row = table.loc["spectrum-kappa-t25"]
    assert row["criterion"] == "condition number κ" and row["SNR selection"] == "spectrum-t25"
    assert row["− SNR [interval]"].startswith(f"{paired.difference:+.3g} [")
    assert row["p"] == f"{paired.p_value:.3f}" or paired.p_value < 0.001
    assert row["Δ snrtune_retention vs base"] == "-0.05" and row["trainable params"] == "2.50M"
    assert table.loc["spectrum-t25", "− SNR [interval]"] == "–"
    assert criteria_table(runs, agg[agg.variant != "spectrum-kappa-t25"], comp.iloc[:0], cost,
                          "snrtune_toolcall").empty  # no control: no table


def test_jaccard_is_the_mean_over_types_and_overlap_groups_by_size():
    def selection(kind, t, up, q, seed=None):
        modules = [{"name": f"model.layers.{i}.mlp.up_proj", "type": "mlp.up_proj", "layer": i} for i in up]
        modules += [{"name": f"model.layers.{i}.self_attn.q_proj", "type": "self_attn.q_proj", "layer": i} for i in q]
        modules.append({"name": "lm_head", "type": "lm_head", "layer": None})  # a whole matrix: not compared
        return {"selection": kind, "seed": seed, "top_percent": t, "modules": modules}

    snr, kappa = selection("snr", 25, [1, 2], [0]), selection("kappa", 25, [2, 3], [0])
    assert jaccard(snr, kappa) == pytest.approx((1 / 3 + 1) / 2)  # up_proj: {2} of {1, 2, 3}; q_proj: the same
    frames = overlap([snr, kappa, selection("random", 25, [0, 3], [1], seed=1), selection("snr", 50, [1], [0])])
    assert list(frames) == ["t25"]  # t=50 has a single selection
    frame = frames["t25"]
    assert list(frame.index) == ["snr", "random s1", "kappa"]  # criteria in table order, a seed in the label
    assert frame.loc["snr", "kappa"] == frame.loc["kappa", "snr"] == pytest.approx(2 / 3)
    assert frame.loc["snr", "random s1"] == 0 and frame.loc["kappa", "kappa"] == 1


def test_the_verdict_sentence_names_what_beat_or_lost_to_snr():
    rows = [comparison("spectrum-kappa-t25", "spectrum-t25", 0.12, p=0.001, significant=True),
            comparison("spectrum-t25", "spectrum-random-t25", 0.2, p=0.002, significant=True),
            comparison("spectrum-t25", "spectrum-alpha-t25", 0.01, p=0.8)]
    sentence = criteria_verdict(pd.DataFrame(rows, columns=COLUMNS), "snrtune_toolcall")
    assert sentence.startswith("Selection criteria on snrtune_toolcall")
    assert "spectrum-kappa-t25 (+0.12 [0.020, 0.220], adjusted p 0.002) beat it" in sentence
    assert "spectrum-random-t25 (-0.2 [-0.300, -0.100], adjusted p 0.004) did worse" in sentence  # control − SNR
    assert "spectrum-alpha-t25 did not differ significantly." in sentence
    tie = criteria_verdict(pd.DataFrame(rows[2:], columns=COLUMNS), "snrtune_toolcall")
    assert "no criterion's modules scored significantly differently" in tie and "spectrum-alpha-t25 -0.01" in tie
    assert criteria_verdict(pd.DataFrame([comparison("lora", "full", 0.1)], columns=COLUMNS), "snrtune_toolcall") is None
