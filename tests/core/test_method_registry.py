"""The method table: everything reads it, so a method added through the registry alone trains, merges,
gets a run name and a report label; the schema's enum and the CLI's choices agree with it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
import yaml
from train_data import write_alpaca, write_config

from snrtune import criteria, method_registry, naming
from snrtune.cli import main
from snrtune.errors import SnrtuneError
from snrtune.training.merge import merge
from snrtune.method_registry import MethodSpec, registered
from snrtune.training.train import load_config, train

torch.set_num_threads(1)  # two threads on a shared 2-core machine spin-wait: 100x slower small matmuls

SCHEMA = Path(__file__).parents[2] / "workflow" / "schemas" / "config.schema.yaml"


def prepare_norms_only(model, settings, selection, match_params_of):
    """A throwaway method: train the RMSNorm weights, nothing else."""
    for name, param in model.named_parameters():
        param.requires_grad_(name.endswith("norm.weight"))
    model.enable_input_require_grads()
    return model, {}


NORMS_ONLY = MethodSpec("norms-only", selection_kind=None, four_bit=False, is_adapter=False, merge="spectrum-delta",
                        label="norms", prepare=prepare_norms_only, train_overrides={"lora_r": 4})


def test_schema_enums_are_the_registry():
    """The schema file names no method: its enums are filled from the registry when it is loaded, so a
    registered method is accepted in every per-method key, and the file cannot drift from the table."""
    from snrtune.workflow.schema import load_schema, validate_config

    def enums(node):
        if isinstance(node, dict):
            if "enum" in node:
                yield node["enum"]
            for value in node.values():
                yield from enums(value)
        elif isinstance(node, list):
            for value in node:
                yield from enums(value)

    raw = yaml.safe_load(SCHEMA.read_text())
    assert all(len(set(enum) & set(method_registry.names())) <= 1 for enum in enums(raw)), \
        "the schema file lists methods in an enum: use $defs.method"
    schema = load_schema(SCHEMA)
    assert tuple(schema["$defs"]["method"]["enum"]) == method_registry.names()
    assert set(schema["properties"]["methods"]["default"]) <= set(method_registry.names())
    assert schema["$defs"]["rank_reference"]["enum"] == ["qlora"]
    with registered(NORMS_ONLY):
        schema = load_schema(SCHEMA)
        config = {"models": {"m": {"source": "o/m", "resources": {"per_method": {"norms-only": {"gpus": 1}}}}},
                  "methods": ["norms-only", "full"],
                  "train": {"method_settings": {"norms-only": {"lora_r": 4}},
                            "learning_rates": {"norms-only": [1e-3, 3e-3]}}}
        validate_config(config, schema)
    with pytest.raises(SnrtuneError, match="norms-only"):
        validate_config({"models": {"m": {"source": "o/m"}}, "methods": ["norms-only"]}, load_schema(SCHEMA))


def test_cli_choices_are_the_registry(capsys):
    assert main(["train", "model", "--method", "dora", "--data", "d.jsonl", "--out", "r"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("snrtune train: error: argument --method: invalid choice"), err
    assert all(repr(name) in err for name in method_registry.names())


def test_builtin_specs_say_what_the_code_does():
    spectrum, qlora, laser = (method_registry.get(n) for n in ("spectrum", "qlora", "laser-qlora"))
    assert method_registry.selection_names()[:4] == ("spectrum", "laser-qlora", "spectrum-random", "laser-qlora-random")
    assert spectrum.merge == "spectrum-delta" and not spectrum.four_bit
    assert qlora.four_bit and qlora.is_adapter and qlora.merge == "adapter" and not qlora.needs_selection
    assert laser.rank_matching and laser.selection_kind == "snr"
    assert method_registry.get("full").merge == "full-copy"
    assert method_registry.reference() == "full"  # what the report compares every method with
    assert method_registry.default_methods() == ("spectrum", "full", "lora", "qlora", "laser-qlora")  # no control
    for control, mirrored in (("spectrum-random", spectrum), ("laser-qlora-random", laser)):
        spec = method_registry.get(control)
        assert spec.selection_kind == "random" and spec.mirrors == mirrored.name
        assert (spec.prepare, spec.merge, spec.four_bit) == (mirrored.prepare, mirrored.merge, mirrored.four_bit)


def test_every_criterion_but_snr_has_a_control_of_each_snr_selection_method():
    """The controls come from the criterion table: METHOD-CRITERION for spectrum and laser-qlora, the method itself
    on that criterion's selection, mirroring it (so it trains with its settings); run names keep their form."""
    for criterion in criteria.controls():
        for base in ("spectrum", "laser-qlora"):
            spec, mirrored = method_registry.get(f"{base}-{criterion}"), method_registry.get(base)
            assert (spec.selection_kind, spec.mirrors, spec.label) == (criterion, base, f"{mirrored.label}-{criterion}")
            assert (spec.prepare, spec.merge, spec.four_bit, spec.matches_params_of) == \
                (mirrored.prepare, mirrored.merge, mirrored.four_bit, mirrored.matches_params_of)
            assert method_registry.control(base, criterion) is spec
    assert method_registry.control_kinds() == criteria.controls()
    assert naming.parse_run("spectrum-random-t25-s0") == {"method": "spectrum-random", "top_percent": "25", "seed": 0}
    assert naming.parse_run("laser-qlora-lowest-snr-t12.5-s3")["method"] == "laser-qlora-lowest-snr"
    assert naming.run_name("spectrum-kappa", 25, 0) == "spectrum-kappa-t25-s0"


def test_one_reference_method():
    second = MethodSpec("full-again", None, False, False, "full-copy", "full again", prepare_norms_only, reference=True)
    with registered(second), pytest.raises(SnrtuneError, match=r"marks 2 reference methods \(full, full-again\)"):
        method_registry.reference()


def test_unknown_method_is_one_line():
    with pytest.raises(SnrtuneError, match=r"^method 'dora' is not one of spectrum, full, lora, qlora, laser-qlora, spectrum-random, "
                                         r"laser-qlora-random, spectrum-lowest-snr, .*, laser-qlora-position$"):
        method_registry.get("dora")


def test_inconsistent_spec_is_refused():
    with pytest.raises(ValueError, match="merge 'copy'"):
        MethodSpec("x", None, False, False, "copy", "x", prepare_norms_only)
    with pytest.raises(ValueError, match="is_adapter"):
        MethodSpec("x", None, False, True, "full-copy", "x", prepare_norms_only)
    with pytest.raises(ValueError, match="names the method it mirrors"):
        MethodSpec("x", "random", False, False, "spectrum-delta", "x", prepare_norms_only)
    with pytest.raises(ValueError, match="already registered"), \
            registered(MethodSpec("lora", None, False, True, "adapter", "lora", prepare_norms_only)):
        pass


def test_a_control_method_is_one_entry_with_its_run_names():
    """A control is one entry: the prepare function of the method it mirrors, a random selection."""
    spec = MethodSpec("spectrum-shuffled", selection_kind="random", four_bit=False, is_adapter=False,
                      merge="spectrum-delta", label="spectrum (shuffled)", prepare="snrtune.training.methods:prepare_spectrum",
                      mirrors="spectrum")
    with registered(spec):
        assert "spectrum-shuffled" in method_registry.selection_names()
        assert naming.run_name("spectrum-shuffled", 25, 1) == "spectrum-shuffled-t25-s1"
        assert naming.parse_run("spectrum-shuffled-t25-s1") == {"method": "spectrum-shuffled", "top_percent": "25",
                                                                 "seed": 1}
        assert naming.parse_run("spectrum-t25-s1")["method"] == "spectrum"
        assert naming.variant_label({"method": "spectrum-shuffled", "top_percent": 12.5}) == "spectrum (shuffled)-t12.5"
        assert spec.prepare_function().__name__ == "prepare_spectrum"
    assert "spectrum-shuffled" not in method_registry.names()
    assert naming.parse_run("spectrum-random-t25-s1")["method"] == "spectrum-random"


def test_method_overrides_sit_between_defaults_and_the_users_file(tmp_path):
    with registered(NORMS_ONLY):
        assert load_config(None, method="norms-only").lora_r == 4
        assert load_config(str(write_config(tmp_path / "c.yaml", lora_r=8)), method="norms-only").lora_r == 8
    assert load_config(None, method="lora").lora_r == 32
    bad = MethodSpec("bad-overrides", None, False, False, "full-copy", "bad", prepare_norms_only,
                     train_overrides={"lora_r": 0})
    with registered(bad), pytest.raises(SnrtuneError,
                                        match=r"^method 'bad-overrides' training overrides: key 'lora_r': "):
        load_config(None, method="bad-overrides")


def test_a_method_added_through_the_registry_alone_trains_and_merges(tiny_llama, tmp_path):
    data = write_alpaca(tmp_path / "data.jsonl")
    config = write_config(tmp_path / "train.yaml", max_steps=3, val_fraction=0.0)
    with registered(NORMS_ONLY):
        metrics, trained = train(tiny_llama, "norms-only", data, tmp_path / "run", config=config)
        identity = merge(tmp_path / "run", tiny_llama, tmp_path / "merged")
    # tiny Llama: 4 layers × (input + post-attention norm) + the final norm, 64 each
    assert metrics["trainable_params"] == 9 * 64 == metrics["details"]["optimizer_params"]
    assert metrics["run"]["id"] == "tiny-llama/norms-only-s0" and metrics["config"]["lora_r"] == 4
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "chat_template.jinja", "metrics.json", "snrtune_output.json", "snrtune_run.json",
        "spectrum_delta.safetensors", "tokenizer.json", "tokenizer_config.json"]
    assert "overlaid on the base" in identity["merge"]
    base = transformers.AutoModelForCausalLM.from_pretrained(tiny_llama).state_dict()
    merged = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged").state_dict()
    changed = {name for name in base if not torch.equal(base[name], merged[name])}
    assert changed and all(name.endswith("norm.weight") for name in changed)
    for name, param in trained.named_parameters():
        assert torch.equal(merged[name], param.detach()), name
    assert json.loads((tmp_path / "merged" / "snrtune_run.json").read_text())["method"] == "norms-only"
    with pytest.raises(SnrtuneError, match="norms-only"):  # gone with the block
        method_registry.get("norms-only")
