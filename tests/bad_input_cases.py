"""Shared pieces of the bad-input suite (tests/bad_inputs/test_bad_*.py, one file per stage): the assertions every
case makes, a user's work directory, and the broken model directories every sub-command that reads a model is
tried with (each stage's file runs the rows for its commands).

Every case goes through the command line (``snrtune.cli.main``): exit code 2 (or the documented one), exactly one
stderr line ``snrtune CMD: error: …`` naming the file, row or key, no traceback (an exception other than the one
the CLI turns into a line fails the test), and nothing that looks finished.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from snrtune.cli import main
from snrtune.model_dir import weights_fingerprint

GOOD = {"instruction": "What is the capital of France?", "input": "", "output": "Paris."}


def jsonl(*rows) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


def one_error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"snrtune {command}: error: "), err
    return err


def refused(argv: list[str], capsys, *words: str) -> str:
    """``snrtune ARGV`` exits 2 with one line holding every word; returns the line."""
    assert main([str(a) for a in argv]) == 2
    err = one_error_line(capsys, argv[0])
    for word in words:
        assert word in err, err
    return err


def work_files(root: Path) -> dict[str, bytes]:
    """Every file, directory and link under ``root`` (a user's work directory) with its bytes."""
    def content(p: Path) -> bytes:
        if p.is_symlink():
            return b"<link>" + str(p.readlink()).encode()
        return b"<dir>" if p.is_dir() else p.read_bytes()
    return {str(p.relative_to(root)): content(p) for p in sorted(root.rglob("*"))}


def assert_nothing_finished(out: Path) -> None:
    assert not out.exists(), f"{out} was left behind"
    assert not out.with_name(out.name + ".partial").exists(), "OUT.partial was left behind"
    assert not out.with_name(out.name + ".partial.jsonl").exists(), "OUT.partial.jsonl was left behind"
    assert not list(out.parent.glob(f".{out.name}.tmp-*")), "a temporary output was left behind"
    assert not list(out.parent.glob(f".{out.name}.lock")), "the output's lock file was left behind"


def mark(directory: Path, step: str, output: str = "--out") -> Path:
    """A directory as snrtune step ``step`` leaves it (its marker)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "snrtune_output.json").write_text(json.dumps(
        {"written_by": "snrtune", "snrtune_version": "0", "step": step, "output": output}))
    return directory


# ---------------------------------------------------------------- broken model directories

def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=False)
    return dst


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


def edit_header(model: Path, key_part: str, **changes) -> None:
    """Rewrite one tensor's header entry (its dtype string, or its shape with the same element count): the file
    stays self-consistent."""
    path = model / "model.safetensors"
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    key = next(k for k in header if key_part in k)
    header[key].update(changes)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (n - len(text))
    assert len(text) == n
    path.write_bytes(raw[:8] + text + raw[8 + n:])


def edit_config(model: Path, **changes) -> None:
    config = json.loads((model / "config.json").read_text())
    config.update(changes)
    (model / "config.json").write_text(json.dumps(config))


def set_weight(model: Path, key: str, value: float) -> None:
    tensors = load_file(str(model / "model.safetensors"))
    tensors[key][0, 0] = value
    save_file(tensors, str(model / "model.safetensors"), metadata={"format": "pt"})


def remove_tokenizer(model: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        (model / name).unlink(missing_ok=True)


ALL = ["fetch", "scan", "train", "evaluate", "merge"]
READERS = ["fetch", "train", "evaluate", "merge"]  # the commands that read the tokenizer
# case: (change to a copy of the tiny Llama (4 layers, hidden 64, intermediate 128, vocab 320, tied embeddings),
#        commands it is tried with, words the one line must contain)
MODEL_CASES = {
    "index names a missing shard": (lambda m: shard(m, keep_second=False), ALL,
                                    ["model-00002-of-00002.safetensors", "does not exist", "incomplete"]),
    "index names a tensor no shard holds": (index_names_an_absent_tensor, ["scan", "train"],
                                            ["model.safetensors.index.json", "model.layers.9.mlp.up_proj.weight"]),
    "truncated weights file": (lambda m: truncate(m / "model.safetensors"), ALL,
                               ["model.safetensors", "not a valid safetensors file"]),
    "config.json not JSON": (lambda m: (m / "config.json").write_text('{"model_type": "llama",'), ALL,
                             ["config.json", "is not valid JSON"]),
    "config.json a list": (lambda m: (m / "config.json").write_text("[1, 2]"), ["train", "evaluate"],
                           ["config.json", "JSON list; expected an object"]),
    "tokenizer_config.json cut": (lambda m: truncate(m / "tokenizer_config.json", 10), ["train", "evaluate"],
                                  ["tokenizer_config.json", "is not valid JSON"]),
    "weights stored as I32": (lambda m: resave(m, torch.int32), ["fetch", "scan", "train"],
                              ["model.safetensors", "is stored as I32", "expected a float dtype"]),
    "unknown dtype string": (lambda m: edit_header(m, "q_proj", dtype="F33"), ["scan", "train"],
                             ["model.safetensors", "dtype 'F33', which is not a safetensors dtype"]),
    "no tokenizer files": (remove_tokenizer, ["fetch", "train", "evaluate"], ["has no tokenizer files"]),
    # the weights against their own config.json (transformers would initialise missing layers at random)
    "config says 5 layers, the weights hold 4": (
        lambda m: edit_config(m, num_hidden_layers=5), ALL,
        ["the weights do not match config.json (LlamaForCausalLM)", "missing (model.layers.4."]),
    "config says 2 layers, the weights hold 4": (
        lambda m: edit_config(m, num_hidden_layers=2), ALL, ["do not match config.json", "unexpected (model.layers.2."]),
    "config's intermediate_size differs": (
        lambda m: edit_config(m, intermediate_size=96), ALL,
        ["do not match config.json", "of another shape", "mlp.down_proj.weight [64, 128] in the weights, [64, 96]"]),
    "config's hidden_size differs": (lambda m: edit_config(m, hidden_size=32), ["scan", "train", "merge"],
                                     ["do not match config.json", "of another shape"]),
    "config's vocab_size differs": (lambda m: edit_config(m, vocab_size=400), ["fetch", "train", "evaluate"],
                                    ["do not match config.json", "model.embed_tokens.weight [320, 64] in the weights, "
                                     "[400, 64] by the config"]),
    "a transposed header shape": (lambda m: edit_header(m, "layers.0.self_attn.k_proj", shape=[64, 32]),
                                  ["scan", "train", "evaluate"],
                                  ["of another shape", "model.layers.0.self_attn.k_proj.weight [64, 32] in the weights, "
                                   "[32, 64] by the config"]),
    "tokenizer.json is JSON but not a tokenizer": (
        lambda m: (m / "tokenizer.json").write_text('{"version": "1.0"}'), READERS,
        ["the tokenizer of", "tokenizer.json", "does not load", "KeyError"]),
    "chat_template.jinja does not compile": (
        lambda m: (m / "chat_template.jinja").write_text("{% for m in messages %}{{ m.content }}"), READERS,
        ["chat_template.jinja", "is not a valid Jinja template", "line 1"]),
    "snrtune_source.json not JSON": (lambda m: (m / "snrtune_source.json").write_text("{tiny"),
                                     ["scan", "train", "evaluate"], ["snrtune_source.json", "is not valid JSON"]),
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


def model_command(command: str, model: Path, tmp: Path, data: Path, config: Path, tiny_llama: Path
                  ) -> tuple[list[str], Path]:
    """The command line of ``command`` reading model directory ``model`` (merge: as the base), and its output."""
    out = tmp / "out"
    if command == "fetch":
        return ["fetch", str(model), "--out", str(out)], out
    if command == "scan":
        return ["scan", str(model), "--out", str(tmp / "snr.json")], tmp / "snr.json"
    if command == "train":
        return ["train", str(model), "--method", "lora", "--data", str(data), "--out", str(out),
                "--config", str(config)], out
    if command == "evaluate":
        return ["evaluate", str(model), "--tasks", "snrtune_toolcall", "--out", str(tmp / "eval.json")], \
            tmp / "eval.json"
    run = lora_run(tmp / "run", tiny_llama)
    return ["merge", str(run), "--base", str(model), "--out", str(out)], out


def model_cases(command: str) -> list[str]:
    return [case for case, (_, commands, _) in MODEL_CASES.items() if command in commands]


def check_bad_model(case: str, command: str, tiny_llama: Path, tmp_path: Path, capsys, data: Path = None,
                    config: Path = None) -> None:
    """One row of MODEL_CASES through ``command``: one line holding its words, exit 2, nothing finished."""
    change, _, words = MODEL_CASES[case]
    model = copy_model(tiny_llama, tmp_path / "model")
    change(model)
    argv, out = model_command(command, model, tmp_path, data, config, tiny_llama)
    refused(argv, capsys, *words)
    assert_nothing_finished(out)
