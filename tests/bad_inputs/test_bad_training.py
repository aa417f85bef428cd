"""Bad inputs to `snrtune train`: training data, settings (each where it is read: a field's own check, and where
the settings meet the data and the machine), the base model directory, selection files, the packages settings
need, and a run that diverges. Each through the command line: one line on stderr (``snrtune train: error: …``
naming the file, row and key), exit code 2 (3 for a diverged run), before the model loads, and no RUN_DIR or
RUN_DIR.partial left behind (docs/checks.md). Then property-based fuzzing of data rows and training configs."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from bad_input_cases import GOOD, assert_nothing_finished, check_bad_model, jsonl, model_cases, one_error_line
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from train_data import write_alpaca, write_config, write_selection
from workflow_project import SCHEMA, minimal

from snrtune.cli import main
from snrtune.errors import SnrtuneError
from snrtune.training import data_check, sft_data
from snrtune.training.train import load_config
from snrtune.workflow.preflight import preflight
from snrtune.workflow.schema import validate_config

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def train_inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad-training")
    return {"config": write_config(d / "train.yaml", max_steps=2), "data": write_alpaca(d / "d.jsonl"), "dir": d}


def run_train(model, data, out, config, extra=(), method="lora"):
    return main(["train", str(model), "--method", method, "--data", str(data), "--out", str(out),
                 "--config", str(config), *[str(e) for e in extra]])


# ---------------------------------------------------------------- the base model directory

@pytest.mark.parametrize("case", model_cases("train"))
def test_bad_model_directory(case, tiny_llama, train_inputs, tmp_path, capsys):
    check_bad_model(case, "train", tiny_llama, tmp_path, capsys, train_inputs["data"], train_inputs["config"])


# ---------------------------------------------------------------- training data

# case: (file name, content bytes or a function writing the file, extra CLI args, words the error must contain)
DATA_CASES = {
    "empty file": ("d.jsonl", b"", [], ["d.jsonl", "is empty"]),
    "blank line": ("d.jsonl", jsonl(GOOD, b"", GOOD), [], ["d.jsonl", "row 2 is a blank line"]),
    "malformed JSONL": ("d.jsonl", jsonl(GOOD, GOOD, b'{"instruction": "q", "output": '), [],
                        ["d.jsonl", "row 3 is not valid JSON"]),
    "row without output": ("d.jsonl", jsonl(GOOD, GOOD, {"instruction": "q", "input": ""}), [],
                           ["row 3 has no field 'output' (the response)"]),
    "null output": ("d.jsonl", jsonl(GOOD, {"instruction": "q", "output": None}), [],
                    ["row 2: field 'output' is null; expected a string"]),
    "empty output": ("d.jsonl", jsonl(GOOD, {"instruction": "q", "output": "  "}), [],
                     ["row 2: field 'output' is empty"]),
    "non-UTF-8 bytes": ("d.jsonl", jsonl(GOOD, b'{"instruction": "caf\xe9", "output": "x"}'), [],
                        ["row 2 is not UTF-8: byte", "'e9'"]),
    "non-string output": ("d.jsonl", jsonl(GOOD, {"instruction": "q", "output": 42}), [],
                          ["row 2: field 'output' is a number (42); expected a string"]),
    "non-string instruction": ("d.jsonl", jsonl({"instruction": ["q"], "output": "a"}), [],
                               ["row 1: field 'instruction' is an array"]),
    "unpaired surrogate": ("d.jsonl", jsonl(GOOD, b'{"instruction": "q", "output": "\\ud800"}'), [],
                           ["row 2: field 'output' holds an unpaired surrogate"]),
    "row not an object": ("d.jsonl", jsonl([GOOD]), [], ["row 1 is an array; expected an object"]),
    "unknown columns": ("d.jsonl", jsonl({"text": "hello"}), [], ["row 1: cannot detect the data format"]),
    "messages without assistant turn": ("d.jsonl", jsonl({"messages": [{"role": "user", "content": "hi"}]}), [],
                                        ["row 1: field 'messages' has no assistant turn"]),
    "messages content not a string": (
        "d.jsonl", jsonl({"messages": [{"role": "user", "content": [{"type": "text"}]},
                                       {"role": "assistant", "content": "x"}]}), [],
        ["row 1: field 'messages[0].content' is an array"]),
    "sharegpt unknown speaker": ("d.jsonl", jsonl({"conversations": [{"from": "robot", "value": "x"}]}), [],
                                 ["row 1: field 'conversations[0].from' is \"robot\""]),
    "JSON array file with a bad row": ("d.json", json.dumps([GOOD, {"instruction": "q"}]).encode(), [],
                                       ["d.json", "row 2 has no field 'output'"]),
    "JSON file not valid": ("d.json", b'[{"instruction": "q",\n "output": }]', [],
                            ["d.json", "is not valid JSON", "line 2"]),
    "parquet with a null output": ("d.parquet", lambda p: pd.DataFrame([GOOD, {**GOOD, "output": None}]).to_parquet(p),
                                   [], ["d.parquet", "row 2: field 'output' is null"]),
    "parquet file corrupt": ("d.parquet", b"PAR1 this is not parquet", [], ["d.parquet", "not a readable parquet"]),
    "unsupported suffix": ("d.csv", b"instruction,output\nq,a\n", [], ["d.csv", "suffix '.csv'"]),
    "messages with an unknown role": ("d.jsonl", jsonl({"messages": [{"role": "narrator", "content": "Once"},
                                                                     {"role": "user", "content": "q"},
                                                                     {"role": "assistant", "content": "a"}]}), [],
                                      ["row 1: field 'messages[0].role' is \"narrator\"; expected one of system, "
                                       "user, assistant, tool"]),
    "DPO pair with chosen == rejected": ("p.jsonl", jsonl({"prompt": "q", "chosen": "a", "rejected": "b"},
                                                          {"prompt": "q", "chosen": "same", "rejected": "same"}),
                                         ["--stage", "dpo"], ["p.jsonl", "row 2: fields 'chosen' and 'rejected' are "
                                                              "the same"]),
    "DPO row without rejected": ("p.jsonl", jsonl({"prompt": "q", "chosen": "a", "rejected": "b"},
                                                  {"prompt": "q", "chosen": "a"}), ["--stage", "dpo"],
                                 ["p.jsonl", "row 2 has no field 'rejected'"]),
}




@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_training_data(case, tiny_llama, train_inputs, tmp_path, capsys):
    name, content, extra, words = DATA_CASES[case]
    data = tmp_path / name
    if callable(content):
        content(data)
    else:
        data.write_bytes(content)
    out = tmp_path / "run"
    assert run_train(tiny_llama, data, out, train_inputs["config"], extra) == 2
    err = one_error_line(capsys, "train")
    for word in words:
        assert word in err, err
    assert_nothing_finished(out)


def test_missing_data_file_is_one_line(tiny_llama, train_inputs, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_train(tiny_llama, tmp_path / "nope.jsonl", out, train_inputs["config"]) == 2
    assert "nope.jsonl' is neither an existing file nor a hub dataset id" in one_error_line(capsys, "train")
    assert_nothing_finished(out)


@pytest.mark.slow
def test_a_real_process_prints_one_line_and_exits_2(tiny_llama, train_inputs, tmp_path):
    """The same, as a user runs it: `python -m snrtune.cli` in its own process (no traceback on stderr)."""
    data = tmp_path / "d.jsonl"
    data.write_bytes(jsonl(GOOD, {"instruction": "q", "output": None}))
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "snrtune.cli", "train", str(tiny_llama), "--method", "lora",
                           "--data", str(data), "--out", str(out), "--config", str(train_inputs["config"])],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "row 2: field 'output' is null" in proc.stderr, proc.stderr
    assert_nothing_finished(out)


# ---------------------------------------------------------------- training settings

CUDA = torch.cuda.is_available()
# case: (YAML text of the config's overrides, extra CLI args, words the one line must contain)
SETTINGS_CASES = {
    # `learning_rate: 2e-4` (a string to PyYAML) is converted deliberately (docs/training.md; test_settings.py)
    "learning_rate not a number": ("learning_rate: fast\n", [], ["learning_rate"]),
    "negative learning rate": ("learning_rate: -0.001\n", [], ["learning_rate"]),
    "batch size 0": ("per_device_train_batch_size: 0\n", [], ["per_device_train_batch_size"]),
    "max_steps -3 in the config": ("max_steps: -3\nnum_epochs: 1\n", [], ["max_steps"]),
    "--max-steps -3 on the command line": ("num_epochs: 1\n", ["--max-steps", "-3"], ["command line: key 'max_steps'"]),
    # a field's own check
    "seed 2**32": ("seed: 4294967296\n", [], ["key 'seed': expected an integer >= 0 and <= 4294967295"]),
    "--seed -5": ("", ["--seed", "-5"], ["command line: key 'seed': expected an integer >= 0"]),
    "unknown report_to": ("report_to: carrier-pigeon\n", [], ["key 'report_to': expected one or a list of none, all"]),
    "unknown ddp_backend": ("ddp_backend: carrier-pigeon\n", [], ["key 'ddp_backend': expected null or one of nccl, gloo"]),
    "deepspeed: missing.json": ("deepspeed: missing.json\n", [],
                                ["key 'deepspeed'", "an existing DeepSpeed JSON file (it does not exist)",
                                 "'missing.json'"]),
    "duplicate YAML keys": ("learning_rate: 0.01\nlearning_rate: 0.02\n", [],
                            ["train.yaml", "key 'learning_rate' appears twice", "expected each key once"]),
    # where the settings meet the data and the machine (snrtune.training.settings_fit)
    "reduce_lr_on_plateau without evaluation": (
        "lr_scheduler_type: reduce_lr_on_plateau\n", [],
        ["key 'lr_scheduler_type': reduce_lr_on_plateau lowers the learning rate", "eval_steps is null"]),
    "dataset_split of a local file": ("dataset_split: validation\n", [],
                                      ["key 'dataset_split': 'validation' names a split of a hub dataset",
                                       "a local file, which has none"]),
    "num_epochs 0.001": ("num_epochs: 0.001\nmax_steps: null\n", [],
                         ["keys 'num_epochs' and 'gradient_accumulation_steps'", "0.001 epoch(s) of 7 training rows",
                          "expected at least one full step"]),
    "gradient_accumulation_steps 1000": ("gradient_accumulation_steps: 1000\nmax_steps: null\nnum_epochs: 1\n", [],
                                         ["4000 examples per step", "expected at least one full step"]),
    "gradient_accumulation_steps 1000 with max_steps": (
        "gradient_accumulation_steps: 1000\n", [], ["= 4000 examples per step, but the data has 7 training rows"]),
    "fsdp in one process": ("fsdp: true\n", [], ["key 'fsdp': FSDP shards the model over processes"]),
}
if not CUDA:
    SETTINGS_CASES.update({
        "flex_attention on a CPU": ("attn_implementation: flex_attention\n", [],
                                    ["key 'attn_implementation': 'flex_attention' needs a CUDA GPU"]),
        "ddp_backend nccl on a CPU": ("ddp_backend: nccl\n", [], ["key 'ddp_backend': 'nccl' needs CUDA GPUs"]),
    })


@pytest.mark.parametrize("case", SETTINGS_CASES)
def test_bad_training_settings(case, tiny_llama, train_inputs, tmp_path, capsys):
    overrides, extra, words = SETTINGS_CASES[case]
    base = yaml.safe_load(train_inputs["config"].read_text())
    for name in yaml.safe_load(overrides.replace("learning_rate: 0.02\n", "")) or {}:
        base.pop(name, None)
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(base) + overrides)  # the overrides exactly as a user types them
    out = tmp_path / "run"
    data = tmp_path / "d.jsonl"
    data.write_bytes(jsonl(*[GOOD] * 8))
    assert run_train(tiny_llama, data, out, config, extra) == 2
    err = one_error_line(capsys, "train")
    for word in words:
        assert word in err, err
    assert_nothing_finished(out)


@pytest.mark.parametrize("make, words", [
    (lambda p: p.mkdir(), ["training config", "is a directory; expected a file"]),
    (lambda p: p.write_bytes(b"learning_rate: 0.01\nnote: caf\xe9\n"), ["training config", "is not UTF-8: byte 29 is e9"]),
    (lambda p: p.write_text("learning_rate: [0.01\n"), ["training config", "is not valid YAML"]),
])
def test_a_config_file_that_cannot_be_read(make, words, tiny_llama, train_inputs, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    make(config)
    out = tmp_path / "run"
    assert run_train(tiny_llama, train_inputs["data"], out, config) == 2
    err = one_error_line(capsys, "train")
    for word in words:
        assert word in err, err
    assert_nothing_finished(out)


def test_the_preflight_checks_the_budget_against_the_data(tmp_path):
    """The workflow's pre-flight knows a local data file's rows: the budget check runs there, before any job."""
    data = tmp_path / "d.jsonl"
    data.write_bytes(jsonl(*[GOOD] * 8))
    config = write_config(tmp_path / "train.yaml", max_steps=None, num_epochs=0.001)
    with pytest.raises(SnrtuneError, match=r"training config .*train.yaml: keys 'num_epochs' .* expected at least one"):
        preflight(validate_config(minimal(methods=["lora"], data={"train": str(data)},
                                                train={"config": str(config)}), SCHEMA))

# ---------------------------------------------------------------- hand-edited selection files

def edited(path: Path, **changes) -> Path:
    sel = yaml.safe_load(path.read_text())
    for key, value in changes.items():
        if value is KeyError:
            sel.pop(key)
        else:
            sel[key] = value
    path.write_text(yaml.safe_dump(sel))
    return path


ALL_PARAMETERS = [r"^model\."]  # the tiny Llama's every parameter (lm_head is tied to the embeddings)
# case: (write the file from a good sel.yaml at path, method, words the one line must contain)
SELECTION_CASES = {
    "trainable_params: lots": (lambda p: edited(p, trainable_params="lots"), "spectrum",
                               ["key 'trainable_params'", "'lots' is not of type 'integer'"]),
    "top_percent: abc": (lambda p: edited(p, top_percent="abc"), "spectrum", ["key 'top_percent'", "'abc'"]),
    "top_percent: 0": (lambda p: edited(p, top_percent=0), "spectrum", ["key 'top_percent'", "0 is less than"]),
    "top_percent: 150": (lambda p: edited(p, top_percent=150), "spectrum",
                         ["key 'top_percent'", "150 is greater than the maximum of 100"]),
    "top_percent: -5": (lambda p: edited(p, top_percent=-5), "spectrum", ["key 'top_percent'"]),
    "patterns a string": (lambda p: edited(p, unfrozen_parameters=r"^model\.layers\.1\."), "spectrum",
                          ["key 'unfrozen_parameters'", "is not of type 'array'"]),
    "invalid regex": (lambda p: edited(p, unfrozen_parameters=[r"^model\.layers\.[1"]), "spectrum",
                      ["key 'unfrozen_parameters[0]'", "not a regular expression"]),
    "empty pattern list": (lambda p: edited(p, unfrozen_parameters=[]), "spectrum",
                           ["key 'unfrozen_parameters'", "non-empty"]),
    "null patterns": (lambda p: edited(p, unfrozen_parameters=None), "spectrum", ["key 'unfrozen_parameters'"]),
    "a null pattern": (lambda p: edited(p, unfrozen_parameters=[None]), "spectrum", ["key 'unfrozen_parameters[0]'"]),
    "an empty pattern (matches everything)": (lambda p: edited(p, unfrozen_parameters=[""]), "spectrum",
                                              ["key 'unfrozen_parameters[0]'"]),
    "no patterns key": (lambda p: edited(p, unfrozen_parameters=KeyError), "spectrum",
                        ["key 'unfrozen_parameters': is missing"]),
    "invalid YAML": (lambda p: p.write_text("unfrozen_parameters: [a\nmodel: x\n"), "spectrum", ["is not valid YAML"]),
    "not UTF-8": (lambda p: p.write_bytes(b"model: caf\xe9\nunfrozen_parameters: ['^a']\n"), "spectrum",
                  ["is not UTF-8: byte 10 is e9"]),
    "empty file": (lambda p: p.write_text(""), "spectrum", ["holds nothing"]),
    "laser-qlora without exports": (lambda p: edited(p, exports=KeyError), "laser-qlora",
                                    ["key 'exports': is missing"]),
    "laser-qlora with empty target_modules": (lambda p: edited(p, exports={"peft": {"target_modules": []}}),
                                              "laser-qlora", ["key 'exports.peft.target_modules'", "non-empty"]),
    "made for another model (name)": (lambda p: edited(p, model="SmolLM2-135M"), "spectrum",
                                      ["key 'model' is 'SmolLM2-135M'", "'tiny-llama'"]),
    "made for another model (total_params)": (lambda p: edited(p, total_params=1234567), "spectrum",
                                              ["key 'total_params' is 1234567", "tiny-llama"]),
    # validated against the method
    "a random control given an SNR selection": (lambda p: p, "spectrum-random",
                                                ["key 'selection' is 'snr' but method 'spectrum-random' trains a "
                                                 "'random' selection"]),
    "spectrum given a random control's selection": (lambda p: edited(p, selection="random"), "spectrum",
                                                    ["key 'selection' is 'random' but method 'spectrum' trains a "
                                                     "'snr' selection"]),
    "a pattern listed twice": (lambda p: edited(p, unfrozen_parameters=[r"^model\.layers\.1\.", r"^model\.layers\.1\."]),
                               "spectrum", ["key 'unfrozen_parameters[1]' repeats", "(also at [0])"]),
    "a module listed twice": (lambda p: edited(p, modules=[{"name": "model.layers.1.self_attn.q_proj"}] * 2),
                              "spectrum", ["key 'modules[1]' repeats 'model.layers.1.self_attn.q_proj'"]),
    "a target module listed twice": (lambda p: edited(p, exports={"peft": {"target_modules": [
        "model.layers.1.self_attn.q_proj"] * 2}}), "laser-qlora", ["key 'exports.peft.target_modules[1]' repeats"]),
    # validated against the model, before it loads
    "recorded shapes of another model": (lambda p: edited(p, modules=[
        {"name": "model.layers.1.self_attn.q_proj", "param": "model.layers.1.self_attn.q_proj.weight",
         "shape": [576, 576]}]), "spectrum", ["key 'modules[0].shape': [576, 576] but the model's",
                                               "is [64, 64]"]),
    "a module the model lacks": (lambda p: edited(p, modules=[
        {"name": "model.layers.9.self_attn.q_proj", "param": "model.layers.9.self_attn.q_proj.weight"}]),
        "spectrum", ["key 'modules[0].param'", "is not a parameter of the model"]),
    "a pattern that matches no parameter": (lambda p: edited(p, unfrozen_parameters=[r"^model\.layers\.9\."]),
                                            "spectrum", ["key 'unfrozen_parameters[0]'", "matches no parameter"]),
    "trainable_params disagrees with the patterns": (lambda p: edited(p, trainable_params=999), "spectrum",
                                                     ["key 'trainable_params' is 999 but its patterns make 12288"]),
    "every parameter, trainable_params null": (
        lambda p: edited(p, unfrozen_parameters=ALL_PARAMETERS, trainable_params=None), "spectrum",
        ["its unfrozen_parameters make every parameter of the model trainable", "--allow-every-parameter"]),
    "a LoRA target module the model lacks": (
        lambda p: edited(p, exports={"peft": {"target_modules": ["model.layers.1.self_attn.nope"]}}), "laser-qlora",
        ["key 'exports.peft.target_modules[0]': 'model.layers.1.self_attn.nope' is not a module of the model"]),
}


@pytest.mark.parametrize("case", list(SELECTION_CASES))
def test_bad_selection_file(case, tiny_llama, train_inputs, tmp_path, capsys):
    write, method, words = SELECTION_CASES[case]
    sel = write_selection(tmp_path / "sel.yaml")
    write(sel)
    out = tmp_path / "run"
    assert main(["train", str(tiny_llama), "--method", method, "--selection", str(sel), "--data",
                 str(train_inputs["data"]), "--out", str(out), "--config", str(train_inputs["config"])]) == 2
    err = one_error_line(capsys, "train")
    assert "sel.yaml" in err, err
    for word in words:
        assert word in err, err
    assert not out.exists() and not out.with_name("run.partial").exists()


def test_a_selection_for_a_method_that_trains_none(tiny_llama, train_inputs, tmp_path, capsys):
    sel = write_selection(tmp_path / "sel.yaml")
    out = tmp_path / "run"
    assert run_train(tiny_llama, train_inputs["data"], out, train_inputs["config"], ["--selection", sel]) == 2
    assert "--selection: method 'lora' trains without a selection and would ignore it" in one_error_line(capsys, "train")
    assert_nothing_finished(out)


@pytest.mark.slow
def test_every_parameter_trains_only_when_asked(tiny_llama, train_inputs, tmp_path, capsys):
    sel = edited(write_selection(tmp_path / "sel.yaml"), unfrozen_parameters=ALL_PARAMETERS, trainable_params=None)
    out = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", max_steps=1, val_fraction=0)
    assert run_train(tiny_llama, train_inputs["data"], out, config, ["--selection", sel, "--allow-every-parameter"],
                     method="spectrum") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["trainable_params"] == metrics["total_params"]
    capsys.readouterr()


# ---------------------------------------------------------------- optional packages

# case: (the missing package, training config keys, method, words the one line must contain)
PACKAGE_CASES = {
    "galore (optim)": ("galore_torch", {"optim": "galore_adamw"}, "lora",
                       ["train.yaml: key 'optim': 'galore_adamw' needs the galore_torch package", "pip install galore"]),
    "lomo (optim)": ("lomo_optim", {"optim": "lomo"}, "full", ["key 'optim': 'lomo' needs the lomo_optim package"]),
    "torch_npu (ddp_backend)": ("torch_npu", {"ddp_backend": "hccl"}, "lora",
                                ["key 'ddp_backend': 'hccl' needs the torch_npu package"]),
    "deepspeed": ("deepspeed", {"deepspeed": str(Path(__file__).parents[2] / "config" / "zero3.json")}, "lora",
                  ["train.yaml: key 'deepspeed'", "asks for DeepSpeed, which is not installed", "pip install"]),
    "flash-attn": ("flash_attn", {"attn_implementation": "flash_attention_2"}, "lora",
                   ["key 'attn_implementation'", "'flash_attention_2' needs the flash_attn package",
                    "pip install flash-attn"]),
    "bitsandbytes": ("bitsandbytes", {}, "qlora", ["method 'qlora'", "pip install bitsandbytes"]),
}


@pytest.mark.parametrize("case", list(PACKAGE_CASES))
def test_a_setting_whose_package_is_missing(case, absent, tiny_llama, train_inputs, tmp_path, capsys):
    package, keys, method, words = PACKAGE_CASES[case]
    absent(package)
    config = write_config(tmp_path / "train.yaml", max_steps=1, **keys)
    out = tmp_path / "run"
    assert main(["train", str(tiny_llama), "--method", method, "--data", str(train_inputs["data"]), "--out", str(out),
                 "--config", str(config)]) == 2
    err = one_error_line(capsys, "train")
    for word in words:
        assert word in err, err
    assert not out.exists() and not out.with_name("run.partial").exists()
    with pytest.raises(SnrtuneError) as raised:  # the workflow's pre-flight, before any job
        preflight(validate_config(minimal(methods=[method], train={"config": str(config)}), SCHEMA))
    for word in words:
        assert word in str(raised.value)


def test_bitsandbytes_without_kernels_for_the_gpu(monkeypatch, tiny_llama, train_inputs, tmp_path, capsys):
    """bitsandbytes imported on a CUDA machine it has no library for keeps a stand-in that fails at the first
    4-bit operation; train says so before the model loads."""
    from bitsandbytes import cextension

    stand_in = object.__new__(cextension.ErrorHandlerMockBNBNativeLibrary)
    stand_in.__dict__["error_msg"] = "libbitsandbytes_cuda999.so: cannot open shared object file"
    monkeypatch.setattr(cextension, "lib", stand_in)
    monkeypatch.setattr(cextension, "BNB_BACKEND", "CUDA")
    out = tmp_path / "run"
    assert main(["train", str(tiny_llama), "--method", "qlora", "--data", str(train_inputs["data"]), "--out", str(out),
                 "--config", str(train_inputs["config"])]) == 2
    err = one_error_line(capsys, "train")
    assert "bitsandbytes has no CUDA kernels" in err and "cuda999" in err and "pip install -U bitsandbytes" in err
    assert not out.exists()


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_report_to_an_integration_that_is_not_installed(tiny_llama, train_inputs, tmp_path, capsys):
    config = write_config(tmp_path / "train.yaml", max_steps=1, report_to="wandb")
    out = tmp_path / "run"
    assert run_train(tiny_llama, train_inputs["data"], out, config) == 2
    assert "key 'report_to': 'wandb' needs the wandb package, which is not installed: pip install wandb" in \
        one_error_line(capsys, "train")
    assert_nothing_finished(out)


# ---------------------------------------------------------------- a diverged run

def strict_json(path: Path):
    """JSON as the standard defines it: NaN and Infinity are refused."""
    def refuse(name):
        raise ValueError(f"{path} holds {name}")
    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.mark.slow
def test_a_diverged_run_stops_and_is_written_as_diverged(tiny_llama, tmp_path, capsys):
    """lr 1e18 without clipping: the loss of step 3 is NaN while the weights still fit float32 (found by hand);
    training stops there, the run directory is complete with status diverged and the NaN loss as null, and train
    exits 3 with one line."""
    config = write_config(tmp_path / "train.yaml", learning_rate=1e18, max_grad_norm=0, max_steps=5, save_steps=100)
    data = tmp_path / "d.jsonl"
    data.write_bytes(jsonl(*[GOOD] * 8))
    out = tmp_path / "run"
    assert run_train(tiny_llama, data, out, config) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        f"snrtune train: error: the run diverged: loss became nan at step 3; training stopped and {out} holds it "
        "with status diverged (exit 3"), err
    metrics = strict_json(out / "metrics.json")
    assert metrics["status"] == "diverged" and metrics["diverged"] == {"step": 3, "key": "loss", "value": "nan"}
    assert metrics["details"]["global_step"] == 3  # stopped early: max_steps was 5
    assert [step for step, _ in metrics["train_loss"]] == [1, 2, 3] and metrics["train_loss"][2][1] is None
    assert isinstance(metrics["train_loss"][0][1], float)
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "adapter_config.json", "adapter_model.safetensors", "chat_template.jinja", "metrics.json",
        "snrtune_output.json", "snrtune_run.json", "tokenizer.json", "tokenizer_config.json"]  # a complete lora run
    assert not out.with_name("run.partial").exists()


@pytest.mark.parametrize("allow, code, level", [(False, 3, "error"), (True, 0, "warning")])
def test_the_exit_code_of_a_diverged_run(allow, code, level, tmp_path, capsys, monkeypatch):
    """3 by default; 0 with --allow-diverged (the workflow's choice: Snakemake deletes a failed job's output)."""
    from snrtune.training import train as train_module

    def diverged_run(*args, **kwargs):
        return {"status": "diverged", "diverged": {"step": 7, "key": "eval_loss", "value": "inf"}}, None

    monkeypatch.setattr(train_module, "train", diverged_run)
    argv = ["--allow-diverged"] if allow else []
    assert run_train(tmp_path / "model", tmp_path / "d.jsonl", tmp_path / "run", tmp_path / "c.yaml", argv) == code
    err = capsys.readouterr().err
    assert err == (f"snrtune train: {level}: the run diverged: eval_loss became inf at step 7; training stopped and "
                   f"{tmp_path / 'run'} holds it with status diverged (exit {code}; try a lower learning_rate)\n")


@pytest.mark.slow
def test_an_overflowing_update_is_a_divergence_whatever_the_loss(tiny_llama, train_inputs, tmp_path, capsys):
    """spectrum at lr 1e30 without clipping (the issue's case): the update leaves the trained weights at about 1e30,
    finite but beyond what float32 can square, and every later loss is log(320) = 5.768, a uniform guess, and finite
    (found by hand over 6 steps): the run was written as finished. Now the parameter check stops it after step 1:
    diverged, key "parameters", the parameter and its magnitude named."""
    sel = write_selection(tmp_path / "sel.yaml")
    value = "1e+30"
    config = write_config(tmp_path / "train.yaml", learning_rate=1e30, max_grad_norm=0, max_steps=4, val_fraction=0)
    out = tmp_path / "run"
    assert run_train(tiny_llama, train_inputs["data"], out, config, ["--selection", sel], method="spectrum") == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"the run diverged: parameters became {value} at step 1" in err, err
    metrics = strict_json(out / "metrics.json")
    assert metrics["status"] == "diverged" and metrics["diverged"]["key"] == "parameters"
    assert metrics["diverged"]["parameter"] in ("model.layers.1.self_attn.q_proj.weight",
                                                "model.layers.2.mlp.down_proj.weight")
    assert all(math.isfinite(loss) for _, loss in metrics["train_loss"])  # the loss never said it


# ---------------------------------------------------------------- fuzzing: data rows

KEYS = ["instruction", "input", "output", "system", "messages", "conversations", "prompt", "chosen", "rejected",
        "role", "content", "from", "value"]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4),
                                                                      children, max_size=3),
    max_leaves=8)
TURNS = st.lists(st.fixed_dictionaries({}, optional={"role": st.sampled_from(["user", "assistant", "x"]) | JSON_VALUES,
                                                     "content": st.text(max_size=8) | JSON_VALUES,
                                                     "from": st.sampled_from(["human", "gpt", "robot"]) | JSON_VALUES,
                                                     "value": st.text(max_size=8) | JSON_VALUES}), max_size=3)
FIELD = st.text(max_size=10) | JSON_VALUES | TURNS
ROWS = st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=5), FIELD, max_size=5) | JSON_VALUES
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_trainable(row, fmt, stage):
    """What an accepted row must give downstream: messages with string roles and contents and a response."""
    if stage == "dpo":
        (pref,) = sft_data.preference_rows([row])
        assert all(isinstance(m["content"], str) for key in ("prompt", "chosen", "rejected") for m in pref[key])
        return
    messages = sft_data.to_messages(row, fmt)
    assert all(isinstance(m["role"], str) and isinstance(m["content"], str) for m in messages)
    assert any(m["role"] == "assistant" and m["content"].strip() for m in messages)
    for m in messages:
        m["content"].encode("utf-8")


@FUZZ
@given(row=ROWS, fmt=st.sampled_from(["auto", *data_check.FORMATS]), stage=st.sampled_from(["sft", "dpo"]))
def test_fuzzed_rows_are_accepted_usable_or_one_line_errors(row, fmt, stage):
    try:
        used = data_check.check_records([row], fmt, stage, "fuzz")
    except SnrtuneError as exc:
        assert "\n" not in str(exc) and "row 1" in str(exc)
        return
    assert_trainable(row, used, stage)


@FUZZ
@given(rows=st.lists(ROWS, max_size=4), ascii_only=st.booleans(),
       junk=st.one_of(st.none(), st.binary(max_size=6)), suffix=st.sampled_from([".jsonl", ".json"]))
def test_fuzzed_files_are_accepted_as_written_or_one_line_errors(rows, ascii_only, junk, suffix):
    lines = [json.dumps(r, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass") for r in rows]
    if junk is not None:
        lines.insert(len(lines) // 2, junk)
    content = b"".join(line + b"\n" for line in lines)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"d{suffix}"
        path.write_bytes(content)
        try:
            summary = data_check.check_training_data(path, "auto", "sft")
        except SnrtuneError as exc:
            assert "\n" not in str(exc) and "d" + suffix in str(exc)
            return
        loaded = sft_data.load_records(str(path))
    assert summary.rows == len(loaded) == summary.checked_rows
    whole_array = suffix == ".json" and content.lstrip().startswith(b"[")  # a .json file may hold one array of rows
    same = json.loads(content) if whole_array else [json.loads(line) for line in lines]
    assert json.dumps(loaded) == json.dumps(same)  # kept exactly as written (NaN-safe comparison)
    for row in loaded:
        assert_trainable(row, summary.format, "sft")


# ---------------------------------------------------------------- fuzzing: training configs

CONFIG_KEYS = ["learning_rate", "per_device_train_batch_size", "max_steps", "gradient_accumulation_steps",
               "num_epochs", "loss_on", "dataset_format", "val_fraction", "bogus_key"]
CONFIG_VALUES = (st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=True) | st.text(max_size=5)
                 | st.sampled_from(["2e-4", "responses", "alpaca", "1e-3"]))
CONFIGS = st.dictionaries(st.sampled_from(CONFIG_KEYS), CONFIG_VALUES, max_size=4) | CONFIG_VALUES


def load_fuzzed_config(cfg):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return load_config(str(path))


@FUZZ
@given(cfg=CONFIGS)
def test_fuzzed_configs_load_or_are_one_line_errors(cfg):
    try:
        load_fuzzed_config(cfg)
    except SnrtuneError as exc:
        assert "\n" not in str(exc)


@FUZZ
@given(cfg=CONFIGS)
def test_fuzzed_configs_that_load_have_usable_values(cfg):
    try:
        loaded = load_fuzzed_config(cfg)
    except SnrtuneError:
        return
    get = loaded.get if isinstance(loaded, dict) else (lambda key: getattr(loaded, key))
    lr = get("learning_rate")
    assert isinstance(lr, float) and math.isfinite(lr) and lr > 0
    for key in ("per_device_train_batch_size", "gradient_accumulation_steps"):
        assert type(get(key)) is int and get(key) >= 1
    assert get("max_steps") is None or (type(get("max_steps")) is int and get("max_steps") >= 1)


