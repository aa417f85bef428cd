"""One way to write a t value, a run name, a report label and a module name (snrtune.naming)."""

from __future__ import annotations

import pytest

from snrtune.errors import SnrtuneError
from snrtune.naming import format_t, module_name, parse_run, run_name, t_value, variant_of


@pytest.mark.parametrize("t, text", [(25, "25"), (25.0, "25"), ("25", "25"), (12.5, "12.5"), (0.5, "0.5")])
def test_t_is_written_one_way(t, text):
    assert format_t(t) == text


def test_t_value_makes_integral_t_an_int():
    assert t_value(25.0) == 25 and isinstance(t_value(25.0), int)
    assert t_value(12.5) == 12.5 and t_value(None) is None


def test_run_names_and_report_labels_agree_on_t():
    assert run_name("spectrum", 12.5, 0) == "spectrum-t12.5-s0"
    assert run_name("lora", None, 3) == "lora-s3"
    assert variant_of({"method": "spectrum", "top_percent": 25.0}) == "spectrum-t25"
    assert variant_of({"method": "base", "top_percent": None}) == "base"  # not a method: its name as is
    assert parse_run(run_name("laser-qlora", 50, 2)) == {"method": "laser-qlora", "top_percent": "50", "seed": 2}
    with pytest.raises(SnrtuneError, match="expected METHOD-tT-sSEED"):
        parse_run("spectrum-t25")


def test_module_name_strips_only_a_weight_suffix():
    assert module_name("model.layers.0.self_attn.q_proj.weight") == "model.layers.0.self_attn.q_proj"
    assert module_name("model.layers.0.self_attn.q_proj.bias") == "model.layers.0.self_attn.q_proj.bias"
    assert module_name("model.layers.0.mlp.experts.gate_up_proj") == "model.layers.0.mlp.experts.gate_up_proj"
