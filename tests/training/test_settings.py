"""Typed training settings: every value checked before a model loads, one-line errors naming file and key."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from snrtune.training import setting_checks, setting_views, settings
from snrtune.cli import main
from snrtune.errors import SnrtuneError
from snrtune.training.settings import TrainingSettings, load_settings


def write(tmp_path, text: str) -> str:
    path = tmp_path / "x.yaml"
    path.write_text(text)
    return str(path)


def test_defaults_file_and_dataclass_have_the_same_keys():
    assert list(settings.default_values()) == list(settings.KEYS)
    defaults = load_settings(None)
    assert isinstance(defaults, TrainingSettings)
    assert defaults.learning_rate == 2e-4 and defaults.max_steps is None and defaults.lora_r == 32


def test_yaml_reads_2e_4_as_a_string_and_the_setting_converts_it(tmp_path):
    path = write(tmp_path, "learning_rate: 2e-4\nadam_epsilon: 1e-8\n")
    assert yaml.safe_load(open(path))["learning_rate"] == "2e-4"  # PyYAML (YAML 1.1): no dot, no float
    loaded = load_settings(path)
    assert loaded.learning_rate == 2e-4 and loaded.adam_epsilon == 1e-8
    assert isinstance(loaded.learning_rate, float)


def test_negative_learning_rate_is_one_line_naming_file_and_key(tmp_path):
    path = write(tmp_path, "learning_rate: -1\n")
    with pytest.raises(SnrtuneError) as error:
        load_settings(path)
    assert str(error.value) == f"training config {path}: key 'learning_rate': expected a positive number, got '-1'"


@pytest.mark.parametrize("text, key, expected", [
    ("per_device_train_batch_size: true", "per_device_train_batch_size", "expected an integer >= 1, got 'true'"),
    ("per_device_train_batch_size: 4.0", "per_device_train_batch_size", "expected an integer >= 1, got '4.0'"),
    ("gradient_accumulation_steps: 0", "gradient_accumulation_steps", "expected an integer >= 1, got '0'"),
    ("max_steps: 0", "max_steps", "expected null or an integer >= 1, got '0'"),
    ("max_steps: '10'", "max_steps", "expected null or an integer >= 1, got the string '10'"),
    ("val_fraction: 1", "val_fraction", "expected a number in [0, 1), got '1'"),
    ("learning_rate: true", "learning_rate", "expected a positive number, got 'true'"),
    ("learning_rate: fast", "learning_rate", "expected a positive number, got the string 'fast'"),
    ("learning_rate: .nan", "learning_rate", "expected a positive number, got 'nan'"),
    # beyond float32 it ended in a traceback inside torch's Adam step
    ("learning_rate: 1.0e+39", "learning_rate", "expected a number at most 3.4e+38 (float32's largest"),
    ("learning_rate: 1.0e+30", None, None),  # finite in float32: accepted (the divergence check stops such a run)
    ("loss_on: prompts", "loss_on", "expected one of responses, all, got the string 'prompts'"),
    ("packing: 1", "packing", "expected true or false, got '1'"),
    ("lr_scheduler_type: cosin", "lr_scheduler_type", "expected one of linear, cosine"),
    ("optim: adamw", "optim", "expected one of adamw_torch"),
    ("seed: -3", "seed", "expected an integer >= 0 and <= 4294967295, got '-3'"),
])
def test_wrong_types_and_ranges_are_rejected(tmp_path, text, key, expected):
    path = write(tmp_path, text + "\n")
    if key is None:
        load_settings(path)
        return
    with pytest.raises(SnrtuneError) as error:
        load_settings(path)
    assert str(error.value).startswith(f"training config {path}: key '{key}': {expected}")
    assert "\n" not in str(error.value)


def test_command_line_values_are_checked_and_named(tmp_path):
    assert load_settings(None, seed=3, max_steps=5).max_steps == 5
    with pytest.raises(SnrtuneError, match=r"^command line: key 'max_steps': expected null or an integer >= 1"):
        load_settings(None, max_steps=0)


def test_unknown_key_and_non_mapping_are_errors(tmp_path):
    with pytest.raises(SnrtuneError, match=r"x\.yaml: unknown key\(s\) \['lora_rank'\]"):
        load_settings(write(tmp_path, "lora_rank: 8\n"))
    with pytest.raises(SnrtuneError, match="expected a mapping of keys to values, got list"):
        load_settings(write(tmp_path, "- 1\n"))
    assert load_settings(write(tmp_path, "")) == load_settings(None)  # an empty file changes nothing


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        load_settings(None).learning_rate = 1.0


def test_bad_setting_fails_before_the_model_loads(tiny_llama, tmp_path, monkeypatch, capsys):
    from snrtune.training import methods

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(methods, "load_model", no_loading)
    data = tmp_path / "d.jsonl"
    data.write_text('{"instruction": "a", "input": "", "output": "b"}\n')
    config = write(tmp_path, "learning_rate: -1\n")
    code = main(["train", str(tiny_llama), "--method", "full", "--data", str(data), "--config", config,
                 "--out", str(tmp_path / "run")])
    assert code == 2
    assert capsys.readouterr().err == (f"snrtune train: error: training config {config}: key 'learning_rate': "
                                       f"expected a positive number, got '-1'\n")
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.partial").exists()


# ------------------------------------------------- the budget of one optimizer step at any number of processes

@pytest.mark.parametrize("batch, accumulation, world_size, expected", [
    (4, 4, 1, (4, 4)),
    (4, 4, 2, (4, 2)),   # the accumulation divided: 4 × 2 per process, × 2 processes = 16
    (4, 4, 4, (4, 1)),
    (1, 16, 8, (1, 2)),  # the 70B overlay on a node: 1 × 2 × 8 = 16
    (2, 1, 2, (1, 1)),   # accumulation 1: the micro-batch halves instead
    (4, 3, 2, (3, 2)),   # 12 examples, 6 per process: the largest micro-batch <= 4 dividing 6 is 3
    (4, 4, 3, None),     # 16 examples do not split over 3 processes
])
def test_per_process_split_keeps_the_examples_per_step(batch, accumulation, world_size, expected):
    assert settings.per_process(batch, accumulation, world_size) == expected
    if expected:
        assert expected[0] * expected[1] * world_size == batch * accumulation


def test_settings_for_a_job_of_w_processes_hold_the_files_examples_per_step(tmp_path):
    path = write(tmp_path, "per_device_train_batch_size: 4\ngradient_accumulation_steps: 4\n")
    one, four = load_settings(path), load_settings(path, world_size=4)
    assert (four.per_device_train_batch_size, four.gradient_accumulation_steps) == (4, 1)
    assert settings.examples_per_step(one) == settings.examples_per_step(four, 4) == 16
    assert dataclasses.replace(four, gradient_accumulation_steps=4) == one  # nothing else changes


def test_a_split_that_does_not_divide_is_one_line_naming_the_files_and_keys(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("per_device_train_batch_size: 4\n")
    path = write(tmp_path, "gradient_accumulation_steps: 3\n")
    with pytest.raises(SnrtuneError) as error:
        load_settings([str(base), path], world_size=8)
    assert str(error.value) == (
        f"training config {base} and training config {path}: keys 'per_device_train_batch_size' × "
        "'gradient_accumulation_steps' = 4 × 3 = 12 examples per optimizer step do not split over 8 processes; "
        "expected a product divisible by 8")


def test_several_training_files_merge_in_order_and_errors_name_the_file(tmp_path):
    base, overlay = tmp_path / "base.yaml", tmp_path / "overlay.yaml"
    base.write_text("learning_rate: 1.0e-4\nmax_seq_length: 512\n")
    overlay.write_text("max_seq_length: 1024\n")
    merged = load_settings([str(base), str(overlay)])
    assert (merged.learning_rate, merged.max_seq_length) == (1e-4, 1024)
    assert load_settings([str(overlay), str(base)]).max_seq_length == 512
    overlay.write_text("max_seq_length: 0\n")
    with pytest.raises(SnrtuneError, match=rf"^training config {overlay}: key 'max_seq_length'"):
        load_settings([str(base), str(overlay)])
    with pytest.raises(SnrtuneError, match=r"^training config .*nope\.yaml does not exist$"):
        load_settings([str(base), str(tmp_path / "nope.yaml")])


def test_a_batch_that_does_not_split_over_the_job_stops_before_the_model_loads(tiny_llama, tmp_path, monkeypatch,
                                                                                capsys):
    from snrtune.training import methods

    monkeypatch.setattr(methods, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    monkeypatch.setenv("WORLD_SIZE", "3")  # as torchrun --nproc_per_node 3 sets it
    data = tmp_path / "d.jsonl"
    data.write_text('{"instruction": "a", "input": "", "output": "b"}\n')
    config = write(tmp_path, "per_device_train_batch_size: 4\ngradient_accumulation_steps: 4\n")
    code = main(["train", str(tiny_llama), "--method", "full", "--data", str(data), "--config", config,
                 "--out", str(tmp_path / "run")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"snrtune train: error: training config {config}: keys 'per_device_train_batch_size' × "
                          "'gradient_accumulation_steps' = 4 × 4 = 16 examples per optimizer step do not split over "
                          "3 processes") and err.count("\n") == 1
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.partial").exists()


# ------------------------------------------------- one definition per setting: the YAML defaults, the schema, the docs

def differing_keys(shipped: dict, wanted: dict) -> list[str]:
    return sorted(key for key in set(shipped) | set(wanted) if shipped.get(key, ...) != wanted.get(key, ...))


def test_train_defaults_yaml_is_generated_from_the_fields():
    """src/snrtune/data/train_defaults.yaml lists every field's default and help; after a field changes, this
    names the keys that differ and the command that rewrites the file."""
    text = setting_views.DEFAULTS_FILE.read_text(encoding="utf-8")
    stale = differing_keys(yaml.safe_load(text), settings.default_values())
    assert not stale and text == setting_views.defaults_yaml(), (
        f"{setting_views.DEFAULTS_FILE} is out of date (keys {stale or 'the same; comments differ'}): run "
        f"`{setting_views.REGENERATE}`")


def test_the_docs_settings_table_is_generated_from_the_fields():
    table = setting_views.docs_table(setting_views.DOCS_FILE.read_text(encoding="utf-8"))
    rows = {row.split("|")[1].strip(" `"): row for row in table.splitlines()[2:]}
    wanted = {row.split("|")[1].strip(" `"): row for row in setting_views.settings_table().splitlines()[2:]}
    assert table == setting_views.settings_table(), (
        f"docs/training.md's settings table is out of date (rows {differing_keys(rows, wanted)}): run "
        f"`{setting_views.REGENERATE}`")


def test_the_schema_takes_the_per_method_settings_from_the_fields():
    from snrtune.workflow.schema import load_schema

    schema = load_schema(setting_views.DOCS_FILE.parents[1] / "workflow" / "schemas" / "config.schema.yaml")
    allowed = schema["$defs"]["method_settings"]["properties"]
    assert list(allowed) == list(settings.per_method_keys()) == [
        "learning_rate", "weight_decay", "lora_r", "lora_alpha", "lora_dropout", "use_rslora"]
    assert allowed["lora_r"]["type"] == ["integer", "null"] and allowed["lora_r"]["minimum"] == 1
    assert allowed["learning_rate"]["exclusiveMinimum"] == 0
    assert schema["$defs"]["learning_rate"]["type"] == ["number", "string"]


@dataclasses.dataclass(frozen=True)
class WithMadeUpSetting(TrainingSettings):
    made_up_warmup_ratio: float = settings.setting(0.25, setting_checks.number(0, 1), "a made-up setting",
                                                   per_method=True, section="made up")


def test_a_setting_added_by_its_one_field_reaches_the_defaults_the_schema_and_the_docs(monkeypatch, tmp_path):
    """Add a made-up setting to TrainingSettings and nothing else: it has a default when settings are built, it
    is a key of train_defaults.yaml and a row of the docs table, the workflow schema allows it per method, and a
    workflow config's value is typed by its check."""
    from snrtune.workflow.schema import load_schema, validate_config

    monkeypatch.setattr(settings, "TrainingSettings", WithMadeUpSetting)
    assert load_settings(None).made_up_warmup_ratio == 0.25
    assert load_settings(write(tmp_path, "made_up_warmup_ratio: '5e-1'\n")).made_up_warmup_ratio == 0.5
    assert yaml.safe_load(setting_views.defaults_yaml())["made_up_warmup_ratio"] == 0.25
    assert "# made up\nmade_up_warmup_ratio: 0.25" in setting_views.defaults_yaml()
    assert "| `made_up_warmup_ratio` | 0.25 | number in [0, 1) | yes | a made-up setting |" in \
        setting_views.settings_table().splitlines()
    schema = load_schema(setting_views.DOCS_FILE.parents[1] / "workflow" / "schemas" / "config.schema.yaml")
    assert schema["$defs"]["method_settings"]["properties"]["made_up_warmup_ratio"]["exclusiveMaximum"] == 1
    config = validate_config({"models": {"m": {"source": "o/m"}},
                              "train": {"method_settings": {"lora": {"made_up_warmup_ratio": "2e-1"}}}}, schema)
    assert config["train"]["method_settings"]["lora"]["made_up_warmup_ratio"] == 0.2
    with pytest.raises(SnrtuneError, match=r"^config key 'train.method_settings.lora.made_up_warmup_ratio': "
                                           r"expected a number in \[0, 1\), got the string '2'$"):
        validate_config({"models": {"m": {"source": "o/m"}},
                         "train": {"method_settings": {"lora": {"made_up_warmup_ratio": "2"}}}}, schema)
