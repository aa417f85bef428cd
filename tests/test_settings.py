"""Typed training settings: every value checked before a model loads, one-line errors naming file and key."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from snrtune.training import settings
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
    ("loss_on: prompts", "loss_on", "expected one of responses, all, got the string 'prompts'"),
    ("packing: 1", "packing", "expected true or false, got '1'"),
    ("lr_scheduler_type: cosin", "lr_scheduler_type", "expected one of linear, cosine"),
    ("optim: adamw", "optim", "expected one of adamw_torch"),
    ("seed: -3", "seed", "expected an integer >= 0, got '-3'"),
])
def test_wrong_types_and_ranges_are_rejected(tmp_path, text, key, expected):
    path = write(tmp_path, text + "\n")
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
