"""The model card `snrtune merge` writes into the merged directory: the Hub's metadata (parsed by huggingface_hub
as the Hub parses it) and the method, selection and settings the run recorded."""

from __future__ import annotations

import json

import torch
from huggingface_hub import ModelCard
from tiny import make_tiny_model
from train_data import SELECTED_MODULES, SELECTED_PARAMS, write_alpaca, write_config, write_selection

from snrtune.model_dir import write_source_info
from snrtune.training.card import card_data
from snrtune.training.merge import merge
from snrtune.training.train import train

torch.set_num_threads(1)


def test_merge_writes_a_card_the_hub_parses(tmp_path):
    """A base fetched from the hub (its snrtune_source.json says so): base_model is its id; a local data file is no
    hub dataset; the body states the method, t, the selection kind, the modules and the parameters as recorded."""
    base = make_tiny_model("llama", tmp_path / "base")
    write_source_info(base, name="tiny-llama", source="org/tiny-llama", kind="hub", revision="main")
    run = tmp_path / "run"
    train(base, "spectrum", write_alpaca(tmp_path / "data.jsonl"), run, selection=write_selection(tmp_path / "s.yaml"),
          config=write_config(tmp_path / "train.yaml", max_steps=2, val_fraction=0.0, learning_rate=3e-3))
    merge(run, base, tmp_path / "merged")

    card = ModelCard.load(tmp_path / "merged" / "README.md")
    assert card.data.base_model == "org/tiny-llama" and card.data.library_name == "transformers"
    assert card.data.tags == ["snrtune", "spectrum"] and card.data.datasets is None
    assert card.data.model_name == "tiny-llama/spectrum-t25-s0" and card.data.eval_results is None
    text = card.text
    assert "base model: `org/tiny-llama` (hub, revision main)" in text
    assert "- selection: the top 25 % of the modules of each type, ranked by SNR" in text
    assert f"- modules: {len(SELECTED_MODULES)}" in text
    trainable = json.loads((run / "metrics.json").read_text())["trainable_params"]
    assert trainable == SELECTED_PARAMS and f"- trainable parameters: {trainable:,} of " in text
    assert "learning_rate: 0.003" in text and "max_steps: 2" in text  # the settings as recorded
    # where the base came from travels on in the identity, for the report's completed card
    identity = json.loads((tmp_path / "merged" / "snrtune_run.json").read_text())
    assert identity["base_source"]["source"] == "org/tiny-llama"


def test_a_hub_dataset_is_named_and_a_local_base_has_no_base_model():
    identity = {"id": "m/lora-s0", "model": "m", "method": "lora", "stage": "dpo"}
    data = card_data(identity, {"data": {"source": "org/chats", "kind": "hub"}},
                     {"name": "m", "source": "/models/m", "kind": "local", "revision": None})
    assert data.datasets == ["org/chats"] and data.base_model is None and data.tags == ["snrtune", "lora", "dpo"]
