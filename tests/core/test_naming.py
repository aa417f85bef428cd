"""One way to write a t value, a run name, a report label and a module name (snrtune.naming)."""

from __future__ import annotations

import re

import pytest

from snrtune import naming
from snrtune.errors import SnrtuneError
from snrtune.naming import format_t, module_name, parse_run, run_name, t_value, variant_label


@pytest.mark.parametrize("t, text", [(25, "25"), (25.0, "25"), ("25", "25"), (12.5, "12.5"), (0.5, "0.5")])
def test_t_is_written_one_way(t, text):
    assert format_t(t) == text


def test_t_value_makes_integral_t_an_int():
    assert t_value(25.0) == 25 and isinstance(t_value(25.0), int)
    assert t_value(12.5) == 12.5 and t_value(None) is None


def test_run_names_and_report_labels_agree_on_t():
    assert run_name("spectrum", 12.5, 0) == "spectrum-t12.5-s0"
    assert run_name("lora", None, 3) == "lora-s3"
    assert variant_label({"method": "spectrum", "top_percent": 25.0}) == "spectrum-t25"
    assert variant_label({"method": "base", "top_percent": None}) == "base"  # not a method: its name as is
    assert parse_run(run_name("laser-qlora", 50, 2)) == {"method": "laser-qlora", "top_percent": "50", "seed": 2}
    with pytest.raises(SnrtuneError, match="expected METHOD-tT-sSEED"):
        parse_run("spectrum-t25")


def test_module_name_strips_only_a_weight_suffix():
    assert module_name("model.layers.0.self_attn.q_proj.weight") == "model.layers.0.self_attn.q_proj"
    assert module_name("model.layers.0.self_attn.q_proj.bias") == "model.layers.0.self_attn.q_proj.bias"
    assert module_name("model.layers.0.mlp.experts.gate_up_proj") == "model.layers.0.mlp.experts.gate_up_proj"


@pytest.mark.parametrize("fields", [
    {"method": "spectrum", "top_percent": "25", "budget_params": None, "seed": 0, "stage": "sft"},
    {"method": "laser-qlora-random", "top_percent": "12.5", "budget_params": None, "seed": 3, "stage": "sft"},
    {"method": "spectrum", "top_percent": None, "budget_params": 1000000, "seed": 1, "stage": "sft"},
    {"method": "qlora", "top_percent": None, "budget_params": None, "seed": 2, "stage": "sft"},
    {"method": "lora", "top_percent": None, "budget_params": None, "seed": 0, "stage": "dpo"},
    {"method": "spectrum", "top_percent": "50", "budget_params": None, "seed": 4, "stage": "dpo"},
])
def test_every_run_kind_parses_back_to_what_formatted_it(fields):
    name = naming.format_run(fields["method"], fields["seed"], t=fields["top_percent"] and float(fields["top_percent"]),
                             budget=fields["budget_params"], stage=fields["stage"])
    assert naming.parse_run_id(name) == fields
    if fields["budget_params"] is None and fields["stage"] == "sft":
        assert re.fullmatch(naming.RUN_PATTERN, name)
        assert parse_run(name) == {k: fields[k] for k in ("method", "top_percent", "seed")}
    else:
        with pytest.raises(SnrtuneError, match="a workflow run is METHOD-tT-sSEED"):
            parse_run(name)


def test_train_names_its_runs_in_the_same_grammar(tmp_path):
    from snrtune.training.identity import run_identity

    (tmp_path / "snrtune_source.json").write_text('{"name": "m", "source": "s", "kind": "local"}')
    sel = {"top_percent": None, "budget_params": 5000}
    assert run_identity(tmp_path, "spectrum", sel, 1, "dpo")["id"] == "m/spectrum-b5000-s1-dpo"
    assert naming.parse_run_id("spectrum-b5000-s1-dpo")["budget_params"] == 5000
