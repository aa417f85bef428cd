"""The report's completed model cards (REPORT_DIR/model_cards/MODEL/RUN/README.md): merge's card plus the scores
of scores.csv and the comparisons of comparisons.csv, parsed by huggingface_hub."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from huggingface_hub import ModelCard

from report_fixture import Results, bernoulli
from snrtune.report.report import build_report

BASE_SOURCE = {"name": "tiny", "source": "org/tiny", "kind": "hub", "revision": None}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    res = Results(root)
    res.add("tiny", "base", bernoulli(0.1, 60, seed=1))
    hub_data = {"data": {"source": "org/chats", "kind": "hub", "format": "messages"}}
    res.add("tiny", "spectrum", bernoulli(0.9, 60, seed=2), t=25, seed=0, kind="snr", **hub_data)
    res.add("tiny", "lora", bernoulli(0.3, 60, seed=3), seed=0, **hub_data)
    for path in root.rglob("a.json"):  # merged models' identities carry where their base came from (merge)
        record = json.loads(path.read_text())
        if record["run"]["method"] != "base":
            record["run"]["base_source"] = BASE_SOURCE
            path.write_text(json.dumps(record))
    return build_report(root, tmp_path_factory.mktemp("out") / "report")


def _fmt(x):
    return f"{x + 0.0:.4g}"


def test_every_merged_model_gets_a_card_with_its_scores_and_comparisons(report):
    scores = pd.read_csv(report / "scores.csv")
    comparisons = pd.read_csv(report / "comparisons.csv")
    cards = sorted(p.relative_to(report).as_posix() for p in (report / "model_cards").rglob("README.md"))
    assert cards == ["model_cards/tiny/lora-s0/README.md", "model_cards/tiny/spectrum-t25-s0/README.md"]  # no base
    for run, variant, method in (("spectrum-t25-s0", "spectrum-t25", "spectrum"), ("lora-s0", "lora", "lora")):
        card = ModelCard.load(report / "model_cards" / "tiny" / run / "README.md")
        assert card.data.base_model == "org/tiny" and card.data.datasets == ["org/chats"]
        assert card.data.library_name == "transformers" and card.data.tags == ["snrtune", method]
        mine = scores[scores.variant == variant]
        assert {(r.dataset_name, r.metric_type): r.metric_value for r in card.data.eval_results} == pytest.approx(
            {(r.task, r.metric): r.score for r in mine.itertuples()})
        for r in mine.itertuples():
            assert f"[{_fmt(r.ci_low)}, {_fmt(r.ci_high)}]" in card.text
    # the comparison against the base model on the target task, and lora's side of the ranking pair (sign flipped)
    spectrum = (report / "model_cards/tiny/spectrum-t25-s0/README.md").read_text()
    gain = comparisons[(comparisons.variant == "spectrum-t25") & (comparisons.reference == "base")
                       & (comparisons.task == "snrtune_toolcall")].iloc[0]
    assert gain.significant
    level = f"{100 * gain.confidence:.3g}"
    assert (f"against base on snrtune_toolcall (gain and retention): {gain.difference:+.4g} "
            f"[{_fmt(gain.ci_low)}, {_fmt(gain.ci_high)}] at {level} %, adjusted p {_fmt(gain.p_adjusted)}, "
            "significant") in spectrum
    primary = comparisons[(comparisons.family == "primary: best vs each") & (comparisons.variant == "spectrum-t25")
                          & (comparisons.reference == "lora")].iloc[0]
    lora = (report / "model_cards/tiny/lora-s0/README.md").read_text()
    assert (f"against spectrum-t25 on snrtune_toolcall (primary: best vs each): {-primary.difference:+.4g} "
            f"[{_fmt(-primary.ci_high)}, {_fmt(-primary.ci_low)}] at 95 %") in lora
    assert "cost answer" not in lora  # the margin rows are about the margin, not a difference
