"""Bad model directories, run directories, selection files and missing optional packages, each through the
command line: exactly one line on stderr (``snrtune CMD: error: …`` naming the file, key or setting), exit
code 2, before any model loads, and nothing that looks finished. One table row per case (the case, the
commands it is tried with, the words the line must contain); docs/checks.md lists them."""

from __future__ import annotations

import importlib.util
import json
import shutil
import struct
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from train_data import write_alpaca, write_config, write_selection

from snrtune.cli import main
from snrtune.errors import SnrtuneError
from snrtune.model_dir import check_model_dir, weights_fingerprint
from snrtune.workflow.preflight import preflight
from snrtune.workflow.schema import validate_config
from workflow_project import SCHEMA, minimal

torch.set_num_threads(1)


def one_error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"snrtune {command}: error: "), err
    return err


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=False)
    return dst


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad-models")
    return {"data": write_alpaca(d / "d.jsonl"), "config": write_config(d / "train.yaml", max_steps=1), "dir": d}


# ---------------------------------------------------------------- broken model directories

def shard(model: Path, keep_second: bool = True) -> None:
    """Split model.safetensors into two shards with an index (as save_pretrained does for large models)."""
    tensors = load_file(str(model / "model.safetensors"))
    keys = sorted(tensors)
    halves = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    for name, part in halves.items():
        save_file({k: tensors[k] for k in part}, str(model / name), metadata={"format": "pt"})
    (model / "model.safetensors").unlink()
    index = {"metadata": {}, "weight_map": {k: name for name, part in halves.items() for k in part}}
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    if not keep_second:
        (model / "model-00002-of-00002.safetensors").unlink()


def index_names_an_absent_tensor(model: Path) -> None:
    shard(model)
    index = json.loads((model / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.layers.9.mlp.up_proj.weight"] = "model-00001-of-00002.safetensors"
    (model / "model.safetensors.index.json").write_text(json.dumps(index))


def truncate(path: Path, drop: int = 100) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:-drop])


def resave(model: Path, dtype: torch.dtype) -> None:
    tensors = load_file(str(model / "model.safetensors"))
    save_file({k: (v * 100).to(dtype) for k, v in tensors.items()}, str(model / "model.safetensors"),
              metadata={"format": "pt"})


def relabel_dtype(model: Path, key_part: str, dtype: str) -> None:
    """Rewrite one tensor's dtype string in the header (same byte size: the file stays self-consistent)."""
    path = model / "model.safetensors"
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    key = next(k for k in header if key_part in k)
    header[key]["dtype"] = dtype
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (n - len(text))
    assert len(text) == n
    path.write_bytes(raw[:8] + text + raw[8 + n:])


def remove_tokenizer(model: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        (model / name).unlink(missing_ok=True)


# case: (change to a copy of the tiny model, commands it is tried with, words the one line must contain)
MODEL_CASES = {
    "index names a missing shard": (lambda m: shard(m, keep_second=False), ["fetch", "scan", "train", "evaluate",
                                                                             "merge"],
                                    ["model-00002-of-00002.safetensors", "does not exist", "incomplete"]),
    "index names a tensor no shard holds": (index_names_an_absent_tensor, ["scan", "train"],
                                            ["model.safetensors.index.json", "model.layers.9.mlp.up_proj.weight"]),
    "truncated weights file": (lambda m: truncate(m / "model.safetensors"), ["fetch", "scan", "train", "evaluate",
                                                                              "merge"],
                               ["model.safetensors", "not a valid safetensors file"]),
    "config.json not JSON": (lambda m: (m / "config.json").write_text('{"model_type": "llama",'),
                             ["fetch", "scan", "train", "evaluate", "merge"], ["config.json", "is not valid JSON"]),
    "config.json a list": (lambda m: (m / "config.json").write_text("[1, 2]"), ["train", "evaluate"],
                           ["config.json", "JSON list; expected an object"]),
    "tokenizer_config.json cut": (lambda m: truncate(m / "tokenizer_config.json", 10), ["train", "evaluate"],
                                  ["tokenizer_config.json", "is not valid JSON"]),
    "weights stored as I32": (lambda m: resave(m, torch.int32), ["fetch", "scan", "train"],
                              ["model.safetensors", "is stored as I32", "expected a float dtype"]),
    "unknown dtype string": (lambda m: relabel_dtype(m, "q_proj", "F33"), ["scan", "train"],
                             ["model.safetensors", "dtype 'F33', which is not a safetensors dtype"]),
    "no tokenizer files": (remove_tokenizer, ["fetch", "train", "evaluate"], ["has no tokenizer files"]),
}


def lora_run(path: Path, base: Path) -> Path:
    """A finished-looking lora run directory (its files as `snrtune train` writes them) recording ``base``."""
    path.mkdir()
    (path / "snrtune_run.json").write_text(json.dumps({"id": "tiny-llama/lora-s0", "model": "tiny-llama",
                                                       "method": "lora", "top_percent": None, "seed": 0,
                                                       "stage": "sft", "base_fingerprint": weights_fingerprint(base)}))
    (path / "metrics.json").write_text("{}")
    (path / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    save_file({"base_model.model.lm_head.lora_A.weight": torch.zeros(2, 64)}, str(path / "adapter_model.safetensors"))
    return path


def run_command(command: str, model: Path, tmp: Path, inputs, tiny_llama) -> tuple[list[str], Path]:
    out = tmp / "out"
    if command == "fetch":
        return ["fetch", str(model), "--out", str(out)], out
    if command == "scan":
        return ["scan", str(model), "--out", str(tmp / "snr.json")], tmp / "snr.json"
    if command == "train":
        return ["train", str(model), "--method", "lora", "--data", str(inputs["data"]), "--out", str(out),
                "--config", str(inputs["config"])], out
    if command == "evaluate":
        return ["evaluate", str(model), "--tasks", "snrtune_toolcall", "--out", str(tmp / "eval.json")], \
            tmp / "eval.json"
    run = lora_run(tmp / "run", tiny_llama)
    return ["merge", str(run), "--base", str(model), "--out", str(out)], out


@pytest.mark.parametrize("case, command", [(case, command) for case, (_, commands, _) in MODEL_CASES.items()
                                           for command in commands])
def test_bad_model_directory(case, command, tiny_llama, inputs, tmp_path, capsys):
    change, _, words = MODEL_CASES[case]
    model = copy_model(tiny_llama, tmp_path / "model")
    change(model)
    args, out = run_command(command, model, tmp_path, inputs, tiny_llama)
    assert main(args) == 2
    err = one_error_line(capsys, command)
    for word in words:
        assert word in err, err
    assert not out.exists() and not out.with_name(out.name + ".partial").exists()
    assert not list(tmp_path.glob("*.partial.jsonl")) and not list(tmp_path.glob(".out.tmp-*"))


def test_a_complete_sharded_model_is_accepted_and_scanned_whole(tiny_llama, tmp_path):
    model = copy_model(tiny_llama, tmp_path / "model")
    shard(model)
    whole = check_model_dir(tiny_llama, tokenizer=True)
    assert check_model_dir(model, tokenizer=True).keys() == whole.keys()
    assert main(["scan", str(model), "--out", str(tmp_path / "snr.json")]) == 0
    scanned = {m["param"] for m in json.loads((tmp_path / "snr.json").read_text())["modules"]}
    assert {k for k, e in whole.items() if len(e.shape) == 2} <= scanned


def test_the_weights_fingerprint_follows_the_bytes_not_the_files(tiny_llama, tmp_path):
    """A copy (new file times) has the base's fingerprint; the same shapes with one matrix trained do not."""
    copy = copy_model(tiny_llama, tmp_path / "copy")
    assert weights_fingerprint(copy) == weights_fingerprint(tiny_llama)
    tensors = load_file(str(copy / "model.safetensors"))
    name = "model.layers.1.self_attn.q_proj.weight"
    tensors[name] = tensors[name] + 1e-3
    save_file(tensors, str(copy / "model.safetensors"), metadata={"format": "pt"})
    assert weights_fingerprint(copy) != weights_fingerprint(tiny_llama)


# ---------------------------------------------------------------- merge: broken runs, another base

def spectrum_run(path: Path, base: Path) -> Path:
    run = lora_run(path, base)
    record = json.loads((run / "snrtune_run.json").read_text())
    (run / "snrtune_run.json").write_text(json.dumps({**record, "method": "spectrum"}))
    save_file({"model.layers.1.self_attn.q_proj.weight": torch.zeros(64, 64)}, str(run / "spectrum_delta.safetensors"))
    return run


def full_run(path: Path, base: Path) -> Path:
    copy_model(base, path)
    record = {"id": "tiny-llama/full-s0", "model": "tiny-llama", "method": "full", "seed": 0,
              "base_fingerprint": weights_fingerprint(base)}
    (path / "snrtune_run.json").write_text(json.dumps(record))
    (path / "metrics.json").write_text("{}")
    return path


def other_base(base: Path, tmp: Path) -> Path:
    """The same architecture and shapes, other weights (another model, or another run's merged output)."""
    other = copy_model(base, tmp / "other")
    tensors = load_file(str(other / "model.safetensors"))
    save_file({k: v * 0.5 for k, v in tensors.items()}, str(other / "model.safetensors"), metadata={"format": "pt"})
    return other


def rewrite(path: Path, text: str) -> Path:
    """Replace a run file's text; returns the run directory."""
    path.write_text(text)
    return path.parent


# case: (make the run directory (path, base) -> run, make the base (tiny model, tmp) -> base, words)
RUN_CASES = {
    "snrtune_run.json not JSON": (lambda p, b: rewrite(lora_run(p, b) / "snrtune_run.json", "{oops"), None, ["snrtune_run.json", "is not valid JSON"]),
    "snrtune_run.json without method": (
        lambda p, b: rewrite(lora_run(p, b) / "snrtune_run.json", '{"id": "x", "model": "m"}'), None,
        ["snrtune_run.json", "key 'method'"]),
    "half-written lora run": (lambda p, b: (lora_run(p, b) / "adapter_model.safetensors").unlink() or p, None,
                              ["has no adapter_model.safetensors", "incomplete"]),
    "no metrics.json": (lambda p, b: (lora_run(p, b) / "metrics.json").unlink() or p, None,
                        ["metrics.json", "does not exist"]),
    "truncated spectrum delta": (lambda p, b: truncate(spectrum_run(p, b) / "spectrum_delta.safetensors") or p,
                                 None, ["spectrum_delta.safetensors", "not a valid safetensors file"]),
    "full run with a truncated model.safetensors": (
        lambda p, b: truncate(full_run(p, b) / "model.safetensors") or p, None,
        ["run/model.safetensors", "not a valid safetensors file"]),
    "lora run onto another base": (lora_run, other_base, ["is not the model run 'tiny-llama/lora-s0'", "other",
                                                          "fingerprint"]),
    "spectrum run onto another base": (spectrum_run, other_base, ["is not the model run", "other"]),
}


@pytest.mark.parametrize("case", list(RUN_CASES))
def test_bad_run_directory_or_base_for_merge(case, tiny_llama, tmp_path, capsys):
    make_run, make_base, words = RUN_CASES[case]
    run = make_run(tmp_path / "run", tiny_llama)
    base = make_base(tiny_llama, tmp_path) if make_base else tiny_llama
    out = tmp_path / "merged"
    assert main(["merge", str(run), "--base", str(base), "--out", str(out)]) == 2
    err = one_error_line(capsys, "merge")
    for word in words:
        assert word in err, err
    assert not out.exists() and not list(tmp_path.glob(".merged.tmp-*"))


def test_evaluate_refuses_a_broken_run_record(tiny_llama, tmp_path, capsys):
    model = copy_model(tiny_llama, tmp_path / "model")
    (model / "snrtune_run.json").write_text('{"id": 3}')
    assert main(["evaluate", str(model), "--tasks", "snrtune_toolcall", "--out", str(tmp_path / "e.json")]) == 2
    assert "snrtune_run.json': key 'id' is 3" in one_error_line(capsys, "evaluate")
    assert not (tmp_path / "e.json").exists()


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
}


@pytest.mark.parametrize("case", list(SELECTION_CASES))
def test_bad_selection_file(case, tiny_llama, inputs, tmp_path, capsys):
    write, method, words = SELECTION_CASES[case]
    sel = write_selection(tmp_path / "sel.yaml")
    write(sel)
    out = tmp_path / "run"
    assert main(["train", str(tiny_llama), "--method", method, "--selection", str(sel), "--data",
                 str(inputs["data"]), "--out", str(out), "--config", str(inputs["config"])]) == 2
    err = one_error_line(capsys, "train")
    assert "sel.yaml" in err, err
    for word in words:
        assert word in err, err
    assert not out.exists() and not out.with_name("run.partial").exists()


def test_select_refuses_an_snr_file_whose_module_lacks_its_type(tmp_path, capsys):
    module = {"name": "model.layers.0.self_attn.q_proj", "param": "model.layers.0.self_attn.q_proj.weight",
              "layer": 0, "expert": None, "shape": [4, 4], "snr": 0.5, "status": "ok"}  # no "type"
    (tmp_path / "snr.json").write_text(json.dumps({"model": "m", "modules": [module], "not_scannable": [], "tied": {},
                                                   "total_params": 16, "parameters": {module["param"]: [4, 4]}}))
    out = tmp_path / "sel.yaml"
    assert main(["select", str(tmp_path / "snr.json"), "--top-percent", "50", "--out", str(out)]) == 2
    assert "snr.json': key 'modules[0].type': is missing" in one_error_line(capsys, "select")
    assert not out.exists()


# ---------------------------------------------------------------- optional packages

@pytest.fixture
def absent(monkeypatch):
    """``absent("deepspeed", …)``: those packages look uninstalled to this process (find_spec returns None)."""
    real = importlib.util.find_spec

    def hide(*names):
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a, **k: None if name.split(".")[0] in names else real(name, *a, **k))
    return hide


# case: (the missing package, training config keys, method, words the one line must contain)
PACKAGE_CASES = {
    "deepspeed": ("deepspeed", {"deepspeed": "config/zero3.json"}, "lora",
                  ["train.yaml: key 'deepspeed'", "asks for DeepSpeed, which is not installed", "pip install"]),
    "flash-attn": ("flash_attn", {"attn_implementation": "flash_attention_2"}, "lora",
                   ["key 'attn_implementation'", "'flash_attention_2' needs the flash_attn package",
                    "pip install flash-attn"]),
    "bitsandbytes": ("bitsandbytes", {}, "qlora", ["method 'qlora'", "pip install bitsandbytes"]),
}


@pytest.mark.parametrize("case", list(PACKAGE_CASES))
def test_a_setting_whose_package_is_missing(case, absent, tiny_llama, inputs, tmp_path, capsys):
    package, keys, method, words = PACKAGE_CASES[case]
    absent(package)
    config = write_config(tmp_path / "train.yaml", max_steps=1, **keys)
    out = tmp_path / "run"
    assert main(["train", str(tiny_llama), "--method", method, "--data", str(inputs["data"]), "--out", str(out),
                 "--config", str(config)]) == 2
    err = one_error_line(capsys, "train")
    for word in words:
        assert word in err, err
    assert not out.exists() and not out.with_name("run.partial").exists()
    with pytest.raises(SnrtuneError) as raised:  # the workflow's pre-flight, before any job
        preflight(validate_config(minimal(methods=[method], train={"config": str(config)}), SCHEMA))
    for word in words:
        assert word in str(raised.value)


def test_bitsandbytes_without_kernels_for_the_gpu(monkeypatch, tiny_llama, inputs, tmp_path, capsys):
    """bitsandbytes imported on a CUDA machine it has no library for keeps a stand-in that fails at the first
    4-bit operation; train says so before the model loads."""
    from bitsandbytes import cextension

    stand_in = object.__new__(cextension.ErrorHandlerMockBNBNativeLibrary)
    stand_in.__dict__["error_msg"] = "libbitsandbytes_cuda999.so: cannot open shared object file"
    monkeypatch.setattr(cextension, "lib", stand_in)
    monkeypatch.setattr(cextension, "BNB_BACKEND", "CUDA")
    out = tmp_path / "run"
    assert main(["train", str(tiny_llama), "--method", "qlora", "--data", str(inputs["data"]), "--out", str(out),
                 "--config", str(inputs["config"])]) == 2
    err = one_error_line(capsys, "train")
    assert "bitsandbytes has no CUDA kernels" in err and "cuda999" in err and "pip install -U bitsandbytes" in err
    assert not out.exists()


def test_the_preflight_checks_the_package_of_the_evaluation_backend(absent):
    absent("vllm")
    config = validate_config({"models": {"m": {"source": "org/model", "eval_backend": "vllm"}},
                                 "methods": ["full"]}, SCHEMA)
    with pytest.raises(SnrtuneError, match=r"'models.m.eval_backend': vllm needs the vllm package.*pip install vllm"):
        preflight(config)
    preflight(config, packages_here=False)  # under --sdm conda the jobs' environment is another one


# ---------------------------------------------------------------- the workflow's evaluate.batch_size

@pytest.mark.parametrize("value, ok", [("auto:0", False), ("auto:x", False), ("0", False), (0, False), ("-1", False), ("x", False),
                                       ("auto", True), ("auto:4", True), (8, True), ("8", True)])
def test_eval_batch_size_is_checked_by_the_evaluate_rule(value, ok):
    from snrtune.evaluation.options import parse_batch_size

    config = minimal(evaluate={"batch_size": value})
    if ok:
        validate_config(config, SCHEMA)
        parse_batch_size(str(value))
        return
    with pytest.raises(SnrtuneError, match="config key 'evaluate.batch_size'"):
        validate_config(config, SCHEMA)
    with pytest.raises(SnrtuneError, match="--batch-size"):
        parse_batch_size(str(value))


def test_report_reads_selections_through_the_same_loader(tmp_path, capsys):
    results = tmp_path / "results"
    results.mkdir()
    (results / "t25.yaml").write_text(yaml.safe_dump({"model": "m", "modules": [], "trainable_params": "lots",
                                                      "unfrozen_parameters": [r"^model\.layers\.0\."]}))
    out = tmp_path / "report"
    assert main(["report", str(results), "--out", str(out)]) == 2
    assert "t25.yaml': key 'trainable_params': 'lots' is not of type" in one_error_line(capsys, "report")
    assert not out.exists()
