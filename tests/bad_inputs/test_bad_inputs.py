"""Bad inputs a user can give, each through the command line: exactly one line on stderr
(``snrtune CMD: error: …`` naming the file, row and field), exit code 2, and nothing that looks finished
left behind. One table row per case; then property-based fuzzing of data rows and training configs."""

from __future__ import annotations

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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors_files import CORRUPT, write_corrupt
from train_data import write_config

from snrtune.training import data_check
from snrtune.training import sft_data
from snrtune.cli import main
from snrtune.errors import SnrtuneError
from snrtune.training.train import load_config

torch.set_num_threads(1)

GOOD = {"instruction": "What is the capital of France?", "input": "", "output": "Paris."}


def jsonl(*rows) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


def one_error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"snrtune {command}: error: "), err
    return err


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
    "DPO row without rejected": ("p.jsonl", jsonl({"prompt": "q", "chosen": "a", "rejected": "b"},
                                                  {"prompt": "q", "chosen": "a"}), ["--stage", "dpo"],
                                 ["p.jsonl", "row 2 has no field 'rejected'"]),
}


@pytest.fixture(scope="module")
def train_inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad-inputs")
    return {"config": write_config(d / "train.yaml", max_steps=2), "dir": d}


def run_train(model, data, out, config, extra=(), method="lora"):
    return main(["train", str(model), "--method", method, "--data", str(data), "--out", str(out),
                 "--config", str(config), *extra])


def assert_nothing_finished(out: Path):
    assert not out.exists(), "a run directory was left behind"
    assert not out.with_name(out.name + ".partial").exists(), "RUN.partial was left behind"


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


# case: (YAML text of the config's overrides, extra CLI args, the key the error must name)
SETTINGS_CASES = {
    # `learning_rate: 2e-4` (a string to PyYAML) is converted deliberately (docs/training.md; test_settings.py)
    "learning_rate not a number": ("learning_rate: fast\n", [], "learning_rate"),
    "negative learning rate": ("learning_rate: -0.001\n", [], "learning_rate"),
    "batch size 0": ("per_device_train_batch_size: 0\n", [], "per_device_train_batch_size"),
    "max_steps -3 in the config": ("max_steps: -3\nnum_epochs: 1\n", [], "max_steps"),
    "--max-steps -3 on the command line": ("num_epochs: 1\n", ["--max-steps", "-3"], "command line: key 'max_steps'"),
}


@pytest.mark.parametrize("case", SETTINGS_CASES)
def test_bad_training_settings(case, tiny_llama, train_inputs, tmp_path, capsys):
    overrides, extra, key = SETTINGS_CASES[case]
    base = yaml.safe_load(train_inputs["config"].read_text())
    for name in yaml.safe_load(overrides):
        base.pop(name, None)
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(base) + overrides)  # the overrides exactly as a user types them
    out = tmp_path / "run"
    data = tmp_path / "d.jsonl"
    data.write_bytes(jsonl(*[GOOD] * 8))
    assert run_train(tiny_llama, data, out, config, extra) == 2
    assert key in one_error_line(capsys, "train")
    assert_nothing_finished(out)


# ---------------------------------------------------------------- scan

@pytest.mark.parametrize("case", list(CORRUPT))
def test_corrupt_safetensors(case, tmp_path, capsys):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    write_corrupt(model_dir / "model.safetensors", case)
    out = tmp_path / "snr.json"
    assert main(["scan", str(model_dir), "--out", str(out)]) == 2
    err = one_error_line(capsys, "scan")
    assert "model.safetensors" in err
    for word in CORRUPT[case][3]:
        assert word in err, err
    assert not out.exists() and not (tmp_path / "snr.json.partial.jsonl").exists()


# ---------------------------------------------------------------- select

def small_scan(path: Path) -> Path:
    """An snr.json of two q_proj matrices (4×4), one with snr null as an older scan could write it."""
    modules = [{"name": f"model.layers.{i}.self_attn.q_proj", "param": f"model.layers.{i}.self_attn.q_proj.weight",
                "type": "self_attn.q_proj", "layer": i, "expert": None, "shape": [4, 4], "snr": snr, "status": "ok"}
               for i, snr in enumerate([0.5, 0.7, None])]
    path.write_text(json.dumps({"model": "m", "modules": modules, "not_scannable": [], "tied": {}, "total_params": 48,
                                "parameters": {m["param"]: [4, 4] for m in modules}}))
    return path


SELECT_CASES = {
    f"{mode} --top-percent {t}": (args + ["--top-percent", t], "out of range")
    for mode, args in (("compat spectrum", ["--compat", "spectrum"]), ("per type", []))
    for t in ("-50", "0", "150", "nan", "inf")
}
SELECT_CASES["--budget-fraction nan"] = (["--budget-fraction", "nan"], "out of range")
SELECT_CASES["--budget-params -5"] = (["--budget-params", "-5"], "must be a positive number")
SELECT_CASES["compat spectrum with a budget"] = (["--compat", "spectrum", "--budget-params", "10"], "needs --top-percent")


@pytest.mark.parametrize("case", list(SELECT_CASES))
def test_bad_select_arguments(case, tmp_path, capsys):
    args, words = SELECT_CASES[case]
    out = tmp_path / "sel.yaml"
    assert main(["select", str(small_scan(tmp_path / "snr.json")), "--out", str(out), *args]) == 2
    assert words in one_error_line(capsys, "select")
    assert not out.exists() and not Path(f"{out}.stats.json").exists()


@pytest.mark.parametrize("content, words", [
    ("{not json", "is not valid JSON"),
    ('{"modules": []}', "is not an snrtune scan"),
])
def test_bad_snr_file(content, words, tmp_path, capsys):
    (tmp_path / "snr.json").write_text(content)
    out = tmp_path / "sel.yaml"
    assert main(["select", str(tmp_path / "snr.json"), "--top-percent", "50", "--out", str(out)]) == 2
    assert words in one_error_line(capsys, "select")
    assert not out.exists()


def test_select_never_crashes_on_entries_without_an_snr(tmp_path, capsys):
    for args in (["--top-percent", "100"], ["--top-percent", "100", "--compat", "spectrum"], ["--budget-params", "20"]):
        assert main(["select", str(small_scan(tmp_path / "snr.json")), "--out", str(tmp_path / "s.yaml"), *args]) == 0
        assert "1 matrices are not ranked (1 without an SNR)" in capsys.readouterr().out or "--compat" in args


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


# ---------------------------------------------------------------- outputs: nothing snrtune did not write is removed

def user_files(root: Path) -> dict[str, bytes]:
    """Every file and directory under ``root`` (a user's work directory) with its bytes."""
    return {str(p.relative_to(root)): (b"<dir>" if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))}


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    """A work directory as a user has it (the working directory of each case): a model, results, a run,
    data, and files of the user's own."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model/config.json").write_text('{"model_type": "llama"}')
    (tmp_path / "model/model.safetensors").write_bytes(b"weights that took a day to download")
    (tmp_path / "results/eval").mkdir(parents=True)
    (tmp_path / "results/eval/x.json").write_text('{"run": {}, "results": {}, "config": {}}')
    (tmp_path / "results/NOTES.txt").write_text("my notes")
    (tmp_path / "runs/lora-s0").mkdir(parents=True)
    (tmp_path / "runs/lora-s0/snrtune_run.json").write_text('{"id": "m/lora-s0", "method": "lora"}')
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine/thesis.tex").write_text("chapter 1")
    (tmp_path / "snr.json").write_text("{}")
    (tmp_path / "d.jsonl").write_bytes(jsonl(GOOD))
    (tmp_path / "NOTES.txt").write_text("more notes")
    monkeypatch.chdir(tmp_path)
    return tmp_path


TRAIN = ["train", "model", "--method", "lora", "--data", "d.jsonl"]
# case: (command line, run in the user's work directory; the one line expected after `snrtune CMD: error: `)
OUTPUT_CASES = {
    # the five data-loss cases of issue 22
    "report --out . (the working directory)": (["report", "results", "--out", "."], "--out . is the working directory"),
    "report R --out R": (["report", "results", "--out", "results"], "--out results is the input results_dir results"),
    "fetch src --out src": (["fetch", "model", "--out", "model"], "--out model is the input source model"),
    "train onto its base model": (TRAIN + ["--out", "model"], "--out model is the input model_dir model"),
    "merge --out its --base": (["merge", "runs/lora-s0", "--base", "model", "--out", "model"],
                               "--out model is the input --base model"),
    # the rest, one or more per sub-command
    "report --out above the working directory": (["report", "results", "--out", ".."],
                                                 "--out .. is the working directory or above it"),
    "report --out an ancestor of its input": (["report", "results/eval", "--out", "results"],
                                              "--out results contains the input results_dir results/eval"),
    "report --out the directory of its --files": (["report", "--files", "results/eval/x.json", "--out", "results/eval"],
                                                  "--out results/eval contains the input --files results/eval/x.json"),
    "report --out a directory of the user's": (["report", "results", "--out", "mine"],
                                               "--out mine is an existing directory not written by snrtune"),
    "fetch --out inside its source": (["fetch", "model", "--out", "model/copy"],
                                      "--out model/copy is inside the input source model"),
    "fetch --out a directory of the user's": (["fetch", "model", "--out", "mine"],
                                              "--out mine is an existing directory not written by snrtune "
                                              "(it has no snrtune_output.json)"),
    "fetch --out an existing file": (["fetch", "model", "--out", "NOTES.txt"],
                                     "--out NOTES.txt is an existing file; expected a directory path"),
    "scan --out inside the model": (["scan", "model", "--out", "model/config.json"],
                                    "--out model/config.json is inside the input model_dir model"),
    "scan --spectrum-json onto its --out": (["scan", "model", "--out", "s.json", "--spectrum-json", "s.json"],
                                            "--spectrum-json s.json is the input --out s.json"),
    "scan --out an existing directory": (["scan", "model", "--out", "mine"],
                                         "--out mine is an existing directory; expected a file path"),
    "select --out its snr.json": (["select", "snr.json", "--top-percent", "50", "--out", "snr.json"],
                                  "--out snr.json is the input snr_json snr.json"),
    "select --out an existing directory": (["select", "snr.json", "--top-percent", "50", "--out", "mine"],
                                           "--out mine is an existing directory; expected a file path"),
    "train --out its data file": (TRAIN + ["--out", "d.jsonl"], "--out d.jsonl is the input --data d.jsonl"),
    "train --out inside its base model": (TRAIN + ["--out", "model/run"],
                                          "--out model/run is inside the input model_dir"),
    "train --out a directory of the user's": (TRAIN + ["--out", "mine"], "--out mine is an existing directory not "
                                                                         "written by snrtune"),
    "merge --out its run directory": (["merge", "runs/lora-s0", "--base", "model", "--out", "runs/lora-s0"],
                                      "--out runs/lora-s0 is the input run_dir runs/lora-s0"),
    "merge --out the directory of its runs": (["merge", "runs/lora-s0", "--base", "model", "--out", "runs"],
                                              "--out runs contains the input run_dir runs/lora-s0"),
    "evaluate --out inside the model": (["evaluate", "model", "--tasks", "x", "--out", "model/eval.json"],
                                        "--out model/eval.json is inside the input model_dir model"),
    "evaluate --out its --run-json": (["evaluate", "model", "--tasks", "x",
                                       "--run-json", "runs/lora-s0/snrtune_run.json",
                                       "--out", "runs/lora-s0/snrtune_run.json"],
                                      "--out runs/lora-s0/snrtune_run.json is the input --run-json "
                                      "runs/lora-s0/snrtune_run.json"),
    "evaluate --out an existing directory": (["evaluate", "model", "--tasks", "x", "--out", "mine"],
                                             "--out mine is an existing directory; expected a file path"),
    "prefetch --out its data file": (["prefetch", "--data", "d.jsonl", "--out", "d.jsonl"],
                                     "--out d.jsonl is the input --data d.jsonl"),
    "prefetch --out an existing directory": (["prefetch", "--data", "d.jsonl", "--out", "mine"],
                                             "--out mine is an existing directory; expected a file path"),
    "pick --out a candidate": (["pick", "runs/lora-s0", "--out", "runs/lora-s0"],
                               "--out runs/lora-s0 is the input candidates runs/lora-s0"),
    "pick --out a directory of the user's": (["pick", "runs/lora-s0", "--out", "mine"],
                                             "--out mine is an existing directory not written by snrtune"),
}


@pytest.mark.parametrize("case", list(OUTPUT_CASES))
def test_no_output_removes_what_snrtune_did_not_write(case, user_dir, capsys):
    argv, expected = OUTPUT_CASES[case]
    before = user_files(user_dir)
    assert main(argv) == 2
    assert one_error_line(capsys, argv[0]).startswith(f"snrtune {argv[0]}: error: {expected}")
    assert user_files(user_dir) == before  # nothing removed, overwritten or created


def test_rerunning_a_step_over_its_own_output_replaces_it(tiny_llama, tmp_path, capsys):
    """fetch twice onto one --out: the second replaces the first (it holds snrtune_output.json), as the
    workflow re-runs a step; an empty directory is taken too."""
    out = tmp_path / "m"
    out.mkdir()  # empty: nothing to lose
    assert main(["fetch", str(tiny_llama), "--out", str(out)]) == 0
    assert json.loads((out / "snrtune_output.json").read_text())["written_by"] == "snrtune"
    (out / "stale.txt").write_text("left by the first run")
    assert main(["fetch", str(tiny_llama), "--out", str(out), "--name", "again"]) == 0
    assert not (out / "stale.txt").exists() and json.loads((out / "snrtune_source.json").read_text())["name"] == "again"
    capsys.readouterr()


# ---------------------------------------------------------------- command-line values

VALUE_CASES = {
    "scan --batch-mib nan": (["scan", "model", "--out", "s.json", "--batch-mib", "nan"],
                             "argument --batch-mib: nan is out of range; expected a finite number > 0"),
    "scan --batch-mib 0": (["scan", "model", "--out", "s.json", "--batch-mib", "0"], "argument --batch-mib: 0 is out"),
    "scan --batch-mib -64": (["scan", "model", "--out", "s.json", "--batch-mib", "-64"],
                             "argument --batch-mib: -64 is out of range"),
    "scan --batch-mib lots": (["scan", "model", "--out", "s.json", "--batch-mib", "lots"],
                              "argument --batch-mib: 'lots' is not a number"),
    "scan --device bogus": (["scan", "model", "--out", "s.json", "--device", "bogus"],
                            "argument --device: unknown device 'bogus'; expected cpu, cuda, cuda:N or mps"),
    "scan --device tpu": (["scan", "model", "--out", "s.json", "--device", "tpu"],
                          "argument --device: unknown device 'tpu'"),
    "evaluate --device tpu": (["evaluate", "model", "--tasks", "x", "--out", "e.json", "--device", "tpu"],
                              "argument --device: unknown device 'tpu'"),
    "evaluate --limit nan": (["evaluate", "model", "--tasks", "x", "--out", "e.json", "--limit", "nan"],
                             "argument --limit: nan is out of range; expected a finite number > 0"),
    "evaluate --limit inf": (["evaluate", "model", "--tasks", "x", "--out", "e.json", "--limit", "inf"],
                             "argument --limit: inf is out of range"),
    "evaluate --limit 0": (["evaluate", "model", "--tasks", "x", "--out", "e.json", "--limit", "0"],
                           "argument --limit: 0 is out of range"),
    "a missing required argument": (["scan", "model"], "the following arguments are required: --out"),
}


@pytest.mark.parametrize("case", list(VALUE_CASES))
def test_bad_command_line_values_are_one_line_before_any_work(case, user_dir, capsys):
    argv, expected = VALUE_CASES[case]
    before = user_files(user_dir)
    assert main(argv) == 2
    assert one_error_line(capsys, argv[0]).startswith(f"snrtune {argv[0]}: error: {expected}")
    assert user_files(user_dir) == before


# ---------------------------------------------------------------- scan: a corrupt resume file

def resume_header(model_dir: Path) -> str:
    return json.dumps({"model_dir": str(Path(model_dir).resolve()), "method": "gram", "precision": "float32"})


# case: (resume file content from the model directory, the one note expected)
RESUME_CASES = {
    "not JSON at all": (lambda m: b"\x00\xff garbage\n", "is not a scan resume file (UnicodeDecodeError in line 1)"),
    "a header that is not JSON": (lambda m: b"{model_dir\n", "is not a scan resume file (JSONDecodeError in line 1)"),
    "a bad line before the last": (
        lambda m: (resume_header(m) + "\n{cut\n" + json.dumps({"key": "x", "slice": None, "values": {"status": "ok"}})
                   + "\n").encode(), "line 2 is corrupt (not JSON)"),
    "an entry of another shape": (
        lambda m: (resume_header(m) + '\n{"key": 3, "values": []}\n{"key": "y"}\n').encode(),
        "line 2 is corrupt (expected an object with key, slice and values)"),
}


@pytest.mark.parametrize("case", list(RESUME_CASES))
def test_a_corrupt_scan_resume_file_is_named_and_the_scan_starts_afresh(case, tiny_llama, tmp_path, capsys):
    content, note = RESUME_CASES[case]
    fresh = tmp_path / "fresh.json"
    assert main(["scan", str(tiny_llama), "--out", str(fresh)]) == 0
    out = tmp_path / "snr.json"
    Path(f"{out}.partial.jsonl").write_bytes(content(tiny_llama))
    capsys.readouterr()
    assert main(["scan", str(tiny_llama), "--out", str(out), "--resume"]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert notes == [f"note: --resume: {out}.partial.jsonl {note}; starting afresh"]
    snr = {m["name"]: m["snr"] for m in json.loads(out.read_text())["modules"]}
    assert snr == {m["name"]: m["snr"] for m in json.loads(fresh.read_text())["modules"]}  # every matrix, scanned anew
    assert not Path(f"{out}.partial.jsonl").exists()


# ---------------------------------------------------------------- a diverged run

def strict_json(path: Path):
    """JSON as the standard defines it: NaN and Infinity are refused."""
    def refuse(name):
        raise ValueError(f"{path} holds {name}")
    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.mark.slow
def test_a_diverged_run_stops_and_is_written_as_diverged(tiny_llama, tmp_path, capsys):
    """lr 1e30 without clipping: the loss of step 2 is NaN (found by hand); training stops there, the run
    directory is complete with status diverged and the NaN loss as null, and train exits 3 with one line."""
    config = write_config(tmp_path / "train.yaml", learning_rate=1e30, max_grad_norm=0, max_steps=4, save_steps=100)
    data = tmp_path / "d.jsonl"
    data.write_bytes(jsonl(*[GOOD] * 8))
    out = tmp_path / "run"
    assert run_train(tiny_llama, data, out, config) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        f"snrtune train: error: the run diverged: loss became nan at step 2; training stopped and {out} holds it "
        "with status diverged (exit 3"), err
    metrics = strict_json(out / "metrics.json")
    assert metrics["status"] == "diverged" and metrics["diverged"] == {"step": 2, "key": "loss", "value": "nan"}
    assert metrics["details"]["global_step"] == 2  # stopped early: max_steps was 4
    assert [step for step, _ in metrics["train_loss"]] == [1, 2] and metrics["train_loss"][1][1] is None
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


def test_non_finite_values_are_written_as_null(tmp_path):
    import numpy as np

    from snrtune.fileio import json_safe, write_json

    record = {"train_loss": [[1, 2.5], [2, float("nan")]], "eval": (float("inf"), -float("inf")),
              "peak": np.float32(1.5), "bad": np.float64("nan"), "steps": 3, "ok": True, "name": "nan"}
    write_json(tmp_path / "m.json", json_safe(record))
    assert strict_json(tmp_path / "m.json") == {"train_loss": [[1, 2.5], [2, None]], "eval": [None, None],
                                                "peak": 1.5, "bad": None, "steps": 3, "ok": True, "name": "nan"}


def test_pick_never_chooses_a_diverged_candidate(tmp_path, capsys):
    def candidate(lr, eval_loss, status):
        run = tmp_path / f"lr{lr:g}"
        run.mkdir()
        (run / "metrics.json").write_text(json.dumps({
            "run": {"id": "m/lora-s0"}, "config": {"learning_rate": lr}, "status": status,
            "train_loss": [[1, 2.0], [2, None if status == "diverged" else 1.5]], "eval_loss": eval_loss}))
        return str(run)

    # the diverged one has the lowest validation loss, logged before its loss became NaN
    runs = [candidate(1e-3, [[2, 2.0]], "finished"), candidate(1e-1, [[1, 0.5]], "diverged"),
            candidate(1.0, [[1, None]], "diverged")]
    assert main(["pick", *runs, "--out", str(tmp_path / "chosen")]) == 0
    assert strict_json(tmp_path / "chosen/sweep.json")["chosen"]["learning_rate"] == 1e-3
    capsys.readouterr()
    # every learning rate diverged: the smallest one's run, as diverged, so the report can show the method
    assert main(["pick", *runs[1:], "--out", str(tmp_path / "all")]) == 0
    assert capsys.readouterr().err == (f"snrtune pick: warning: every candidate diverged; {tmp_path / 'all'} is the "
                                       "smallest learning rate's run (0.1) with status diverged\n")
    assert strict_json(tmp_path / "all/metrics.json")["status"] == "diverged"
