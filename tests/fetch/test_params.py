"""The runtime parameter table: recorded by `snrtune fetch`, reused by `snrtune scan` while it still fits."""

import json
import subprocess
import sys

from snrtune.fetch.model import fetch
from snrtune.model_dir import PARAMS_FILE
from snrtune.fetch.params import build_table, load_table
from snrtune.model_dir import weight_files
from snrtune.safetensors_header import checkpoint_tensors
from snrtune.spectrum.scan import scan

SCAN_WITHOUT_TRANSFORMERS = """
import sys
from snrtune.spectrum.scan import scan
scan(sys.argv[1], sys.argv[2])
assert "transformers" not in sys.modules, "scan imported transformers although the table was recorded"
"""


def test_fetch_records_the_table_and_scan_reuses_it_without_transformers(tiny_model_factory, tmp_path):
    source = tiny_model_factory("mixtral")  # checkpoint keys per expert, runtime names fused: a real renaming
    model_dir = fetch(str(source), tmp_path / "model")
    table = json.loads((model_dir / PARAMS_FILE).read_text())
    assert table["renamed"]["model.layers.0.block_sparse_moe.experts.0.w1.weight"] == \
        "model.layers.0.mlp.experts.gate_up_proj"
    subprocess.run([sys.executable, "-c", SCAN_WITHOUT_TRANSFORMERS, str(model_dir), str(tmp_path / "fast.json")],
                   check=True)
    with_table = json.loads((tmp_path / "fast.json").read_text())
    built = scan(source, tmp_path / "built.json")  # no table in the source directory: built on the meta device
    for key in ("parameters", "tied", "total_params"):
        assert with_table[key] == built[key]
    assert [(m["name"], m["param"], m["snr"]) for m in with_table["modules"]] == \
        [(m["name"], m["param"], m["snr"]) for m in built["modules"]]


def test_tied_weights_are_in_the_table(tiny_llama):
    table = build_table(tiny_llama, checkpoint_tensors(weight_files(tiny_llama)))
    assert table["tied"] == {"lm_head.weight": "model.embed_tokens.weight"}
    assert "lm_head.weight" not in table["checkpoint_keys"] and table["renamed"] == {}


def test_a_table_that_no_longer_fits_the_directory_is_ignored(tiny_llama, tmp_path):
    model_dir = fetch(str(tiny_llama), tmp_path / "model", copy=True)
    keys = checkpoint_tensors(weight_files(model_dir))
    assert load_table(model_dir, keys) is not None
    assert load_table(model_dir, list(keys)[1:]) is None  # other weights
    table_path = model_dir / PARAMS_FILE
    table = json.loads(table_path.read_text())
    table_path.write_text(json.dumps({**table, "transformers": "0.0.1"}))
    assert load_table(model_dir, keys) is None  # another transformers
    table_path.write_text(json.dumps(table))
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    assert load_table(model_dir, keys) is None  # another config
    table_path.write_text("{not json")
    assert load_table(model_dir, keys) is None
