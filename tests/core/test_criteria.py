"""The criterion table: what each entry says, the scores of the module criteria, and a new entry reaching the
method registry, the config schema and `select --criterion` (the workflow and the report: tests/workflow/
test_one_entry.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from snrtune import criteria, method_registry
from snrtune.criteria import Criterion, registered
from snrtune.errors import SnrtuneError

SCHEMA = Path(__file__).parents[2] / "workflow" / "schemas" / "config.schema.yaml"


def test_the_table_says_what_each_criterion_ranks_and_which_end_it_keeps():
    assert criteria.names() == ("snr", "random", "lowest-snr", "kappa", "alpha", "position")
    assert criteria.controls() == criteria.names()[1:]
    ends = {c.name: (c.direction, c.key, c.takes) for c in map(criteria.get, criteria.names())}
    assert ends == {"snr": ("highest", "snr", "spectrum"), "random": ("highest", "random", "module"),
                    "lowest-snr": ("lowest", "snr", "spectrum"), "kappa": ("lowest", "kappa", "spectrum"),
                    "alpha": ("highest", "alpha", "spectrum"), "position": ("highest", "position", "module")}
    assert [c.name for c in criteria.spectral()] == ["snr", "kappa", "alpha"]  # lowest-snr reuses the SNR
    assert all(c.source for c in map(criteria.get, criteria.names()))
    assert criteria.get("lowest").name == "lowest-snr"  # the name older selection files use
    with pytest.raises(SnrtuneError, match=r"^criterion 'kapa' is not one of snr, random, lowest-snr, kappa"):
        criteria.get("kapa")


def test_module_criteria_score_position_and_a_seeded_draw():
    layer = lambda i, expert=None: {"name": f"model.layers.{i}.mlp.up_proj", "layer": i, "expert": expert}
    position, random_ = criteria.get("position"), criteria.get("random")
    assert [criteria.score_of(layer(i), position) for i in (0, 5)] == [0.0, 5.0]
    assert criteria.score_of({"name": "lm_head", "layer": None, "expert": None}, position) is None  # no layer
    draws = [criteria.score_of(layer(i), random_, seed=7) for i in range(50)]
    assert draws == [criteria.score_of(layer(i), random_, seed=7) for i in range(50)]  # reproducible
    assert draws != [criteria.score_of(layer(i), random_, seed=8) for i in range(50)]
    assert criteria.score_of(layer(0, 1), random_, 7) != criteria.score_of(layer(0, 2), random_, 7)  # experts
    assert all(0 <= d < 1 for d in draws) and 0.3 < sum(draws) / len(draws) < 0.7
    # the order: the kept end first, ties in layer order
    modules = [layer(3), layer(1), layer(2)]
    assert [m["layer"] for m in sorted(modules, key=lambda m: criteria.rank_key(position, m["layer"], m))] == [3, 2, 1]
    kappa = criteria.get("kappa")
    assert sorted(modules, key=lambda m: criteria.rank_key(kappa, 1.0, m))[0]["layer"] == 1


@pytest.mark.parametrize("entry, message", [
    (dict(name="Frobenius"), "lowercase words"),
    (dict(name="shape"), "a key of snr.json's modules"),
    (dict(direction="up"), "direction 'up'"),
    (dict(score=None), "give a score function or the criterion it ranks by"),
    (dict(takes="module", error=lambda *a: None), "only a spectral score has an error estimate"),
])
def test_a_bad_entry_is_refused(entry, message):
    fields = dict(name="frobenius", score=lambda s, n, m: s.square().sum(-1), takes="spectrum", direction="highest",
                  label="Frobenius", source="a test")
    with pytest.raises(ValueError, match=message):
        Criterion(**{**fields, **entry})


def test_a_new_entry_reaches_the_methods_the_schema_and_select():
    """One entry: the controls spectrum-NAME and laser-qlora-NAME exist, the config accepts it in
    selection.criteria and `select --criterion` takes it; gone with the entry."""
    from snrtune.spectrum import select
    from snrtune.workflow.plan import runs
    from snrtune.workflow.schema import load_schema, validate_config

    entry = Criterion("frobenius", lambda s, n, m: s.square().sum(-1), "spectrum", "highest", "Frobenius²",
                      "a test criterion")
    with registered(entry):
        assert "frobenius" in criteria.controls() and entry in criteria.spectral()
        spec = method_registry.get("spectrum-frobenius")
        assert spec.selection_kind == "frobenius" and spec.mirrors == "spectrum"
        assert method_registry.get("laser-qlora-frobenius").mirrors == "laser-qlora"
        config = validate_config({"models": {"m": {"source": "o/m"}}, "methods": ["spectrum", "qlora"],
                                     "selection": {"criteria": ["snr", "frobenius"]}}, load_schema(SCHEMA))
        assert runs(config) == ["spectrum-t25-s0", "spectrum-t50-s0", "spectrum-frobenius-t25-s0",
                                   "spectrum-frobenius-t50-s0", "qlora-s0"]
        assert select.criterion_name("frobenius") == "frobenius"
    assert method_registry.find("spectrum-frobenius") is None and "frobenius" not in criteria.names()
    with pytest.raises(SnrtuneError, match="'selection.criteria.1': 'frobenius' is not one of"):
        validate_config({"models": {"m": {"source": "o/m"}}, "selection": {"criteria": ["snr", "frobenius"]}},
                           load_schema(SCHEMA))
