"""Bad inputs to `snrtune fetch`: broken model directories (the model check: files, the weights against their
config.json, the tokenizer and its chat template), names that cannot name a model, a revision of a local source.
Each: one line, exit 2, no MODEL_DIR (docs/checks.md)."""

from __future__ import annotations

import json

import pytest
import torch
from bad_input_cases import (assert_nothing_finished, check_bad_model, copy_model, edit_config, mark, model_cases,
                             refused)
from safetensors.torch import load_file, save_file

from snrtune.cli import main
from snrtune.fetch.model_check import check_model

torch.set_num_threads(1)


@pytest.mark.parametrize("case", model_cases("fetch"))
def test_bad_model_directory(case, tiny_llama, tmp_path, capsys):
    check_bad_model(case, "fetch", tiny_llama, tmp_path, capsys)


def test_every_tiny_architecture_passes_the_model_check(tiny_model_factory):
    """Tied weights (Llama, Qwen2, GPT-2) and transformers' checkpoint renamings (Mixtral's per-expert weights,
    fused at load) are the model's: the check against config.json accepts every architecture tests/tiny.py builds."""
    for arch in ("llama", "qwen2", "gpt2", "mixtral", "phi3", "mistral"):
        assert check_model(tiny_model_factory(arch), tokenizer=True)


def test_a_vocabulary_larger_than_the_embeddings(tiny_llama, tmp_path, capsys):
    """Weights and config of 300 embedding rows (consistent), a tokenizer of 320 tokens."""
    model = copy_model(tiny_llama, tmp_path / "small-vocab")
    tensors = load_file(str(model / "model.safetensors"))
    tensors["model.embed_tokens.weight"] = tensors["model.embed_tokens.weight"][:300].clone()
    save_file(tensors, str(model / "model.safetensors"), metadata={"format": "pt"})
    edit_config(model, vocab_size=300)
    refused(["fetch", model, "--out", tmp_path / "out"], capsys, "the tokenizer of", "token ids up to 319",
            "the embedding matrix of its config.json has 300 rows")
    assert_nothing_finished(tmp_path / "out")


@pytest.mark.parametrize("name, words", [
    ("a/b", "--name 'a/b' is not a model name"),
    ("two\nlines", "--name 'two\\nlines' is not a model name"),
    ("my model", "e.g. 'my_model'"),
    ("..", "--name '..' is not a model name"),
])
def test_a_name_that_cannot_name_a_model(name, words, tiny_llama, tmp_path, capsys):
    """Run ids are NAME/METHOD-…, and the report names plot files after NAME: a name is its own file-name slug, so
    two fetched models never share one (a/b and a_b did)."""
    refused(["fetch", tiny_llama, "--out", tmp_path / "m", "--name", name], capsys, words)
    assert_nothing_finished(tmp_path / "m")


def test_a_local_directory_gets_a_valid_default_name(tiny_llama, tmp_path, capsys):
    source = copy_model(tiny_llama, tmp_path / "my model")
    assert main(["fetch", str(source), "--out", str(tmp_path / "m")]) == 0
    assert json.loads((tmp_path / "m/snrtune_source.json").read_text())["name"] == "my_model"
    capsys.readouterr()


def test_a_revision_of_a_local_source(tiny_llama, tmp_path, capsys):
    refused(["fetch", tiny_llama, "--out", tmp_path / "m", "--revision", "v2"], capsys,
            "--revision 'v2' applies to a hub id", "is a local directory; expected no --revision")
    assert_nothing_finished(tmp_path / "m")


def test_a_killed_fetch_leaves_nothing_the_next_one_keeps(tiny_llama, tmp_path, capsys):
    """A fetch killed mid-copy leaves its hidden temporary directory (it holds fetch's marker); the next fetch of
    the same --out removes it. A hidden directory of the user's own of that shape is left alone."""
    stale = mark(tmp_path / ".m.tmp-abc123", "fetch")
    (stale / "model.safetensors").write_bytes(b"x" * 1000)
    users = tmp_path / ".m.tmp-mine"
    users.mkdir()
    (users / "notes.txt").write_text("mine")
    assert main(["fetch", str(tiny_llama), "--out", str(tmp_path / "m")]) == 0
    assert not stale.exists() and (users / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.tmp-mine", "m"]
    capsys.readouterr()
