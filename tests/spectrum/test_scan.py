"""`snrtune scan`: exact values, planted signal, architectures, tied weights, resume, errors."""

import json
import re

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from snrtune.spectrum import scan as scan_module
from snrtune.cli import main
from snrtune.errors import SnrtuneError
from snrtune.spectrum.scan import scan
from snrtune.spectrum.select import select
from snrtune.spectrum.snr import reference_snr, snr_from_singular_values
from tiny import ARCHITECTURES, make_tiny_model


def test_gram_and_svd_agree_with_the_reference_to_1e4(tiny_llama, tmp_path):
    gram = scan(tiny_llama, tmp_path / "gram.json", method="gram")
    exact = scan(tiny_llama, tmp_path / "svd.json", method="svd")
    weights = load_file(tiny_llama / "model.safetensors")
    for fast, slow in zip(gram["modules"], exact["modules"]):
        assert fast["name"] == slow["name"]
        if "tied_to" in fast:
            continue
        reference = reference_snr(weights[fast["param"]])
        assert fast["snr"] == pytest.approx(reference, rel=1e-4)
        assert slow["snr"] == pytest.approx(reference, rel=1e-4)
        assert fast["computed_in"] in ("float64", "float64 svd") and slow["computed_in"] == "float32"
    assert gram["dtype"] == exact["dtype"] == "float32"  # how the tiny model is stored


def test_planted_low_rank_signal_ranks_first(tmp_path):
    """Every q_proj has the same Frobenius norm; layer 4's is a rank-8 signal plus 1% noise energy, the others
    pure Gaussian noise. (The reference SNR divides by S_max, so it is not scale-invariant: a single huge spike
    *lowers* it. Comparing at equal norm is the fair test of "does the SNR see structure".)"""
    model_dir = make_tiny_model("llama", tmp_path / "model", num_hidden_layers=6)
    path = model_dir / "model.safetensors"
    weights = load_file(path)
    torch.manual_seed(1)
    norm = 0.02 * 64
    for layer in range(6):
        noise = torch.randn(64, 64)
        weights[f"model.layers.{layer}.self_attn.q_proj.weight"] = noise / noise.norm() * norm
    u, _ = torch.linalg.qr(torch.randn(64, 8))
    v, _ = torch.linalg.qr(torch.randn(64, 8))
    low_rank = u @ torch.diag(torch.linspace(2, 1, 8)) @ v.T
    noise = torch.randn(64, 64)
    planted = 0.99**0.5 * low_rank / low_rank.norm() + 0.01**0.5 * noise / noise.norm()
    weights["model.layers.4.self_attn.q_proj.weight"] = planted * norm
    save_file(weights, path, metadata={"format": "pt"})
    result = scan(model_dir, tmp_path / "snr.json")
    q = {m["layer"]: m["snr"] for m in result["modules"] if m["type"] == "self_attn.q_proj"}
    gaussian = [q[layer] for layer in range(6) if layer != 4]
    assert max(gaussian) / min(gaussian) < 1.6  # the Gaussian matrices sit together in the bulk ...
    assert q[4] > 3 * max(gaussian)  # ... and the planted structure stands far out
    chosen = select(result, top_percent=20, types=["self_attn.q_proj"])
    assert [m["name"] for m in chosen["modules"]] == ["model.layers.4.self_attn.q_proj"]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_architecture_scans_and_selects_against_real_parameter_names(arch, tiny_model_factory, tmp_path):
    model_dir = tiny_model_factory(arch)
    result = scan(model_dir, tmp_path / "snr.json")
    assert result["modules"] and all(m["status"] == "ok" for m in result["modules"])
    assert all(len(m["shape"]) == 1 for m in result["not_scannable"])
    chosen = select(result, top_percent=50)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
    named = dict(model.named_parameters())
    assert result["total_params"] == sum(p.numel() for p in named.values())
    matched = {n for n in named if any(re.match(p, n) for p in chosen["unfrozen_parameters"])}
    assert sum(named[n].numel() for n in matched) == chosen["trainable_params"]
    types = {m["type"] for m in result["modules"]}
    expected = {"llama": "self_attn.q_proj", "mistral": "mlp.gate_proj", "qwen2": "self_attn.k_proj",
                "phi3": "self_attn.qkv_proj", "gpt2": "attn.c_attn", "mixtral": "block_sparse_moe.experts.w1"}
    assert expected[arch] in types
    if arch == "phi3":
        assert "mlp.gate_up_proj" in types
    if arch == "mixtral":  # per-expert checkpoint matrices, reported under the fused runtime tensor
        w1 = [m for m in result["modules"] if m["type"] == "block_sparse_moe.experts.w1" and m["layer"] == 0]
        assert sorted(m["expert"] for m in w1) == [0, 1, 2, 3]
        assert {m["param"] for m in w1} == {"model.layers.0.mlp.experts.gate_up_proj"}


def test_tied_embeddings_are_scanned_once_and_reported_for_both_names(tiny_llama, tmp_path):
    result = scan(tiny_llama, tmp_path / "snr.json")
    by_name = {m["name"]: m for m in result["modules"]}
    assert result["tied"] == {"lm_head.weight": "model.embed_tokens.weight"}
    assert by_name["lm_head"]["tied_to"] == "model.embed_tokens"
    assert by_name["lm_head"]["snr"] == by_name["model.embed_tokens"]["snr"]
    assert "lm_head.weight" not in result["parameters"]


def test_fused_3d_expert_tensor_gets_one_snr_per_slice(tmp_path):
    torch.manual_seed(0)
    experts = torch.randn(3, 12, 8)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "not-a-transformers-model"}))
    save_file({"model.layers.0.mlp.experts.down_proj": experts, "model.norm.weight": torch.ones(8)},
              tmp_path / "model.safetensors")
    result = scan(tmp_path, tmp_path / "snr.json")
    slices = sorted(result["modules"], key=lambda m: m["expert"])
    assert [m["expert"] for m in slices] == [0, 1, 2]
    for entry in slices:
        assert entry["type"] == "mlp.experts.down_proj" and entry["shape"] == [12, 8]
        assert entry["snr"] == pytest.approx(reference_snr(experts[entry["expert"]]), rel=1e-4)
    assert result["not_scannable"][0]["name"] == "model.norm"


def test_nonfinite_matrices_are_reported_not_ranked(tiny_llama, tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for item in tiny_llama.iterdir():
        (model_dir / item.name).write_bytes(item.read_bytes())
    weights = load_file(model_dir / "model.safetensors")
    weights["model.layers.1.self_attn.q_proj.weight"][0, 0] = float("nan")
    save_file(weights, model_dir / "model.safetensors", metadata={"format": "pt"})
    result = scan(model_dir, tmp_path / "snr.json")
    bad = [m for m in result["modules"] if m["status"] != "ok"]
    assert [(m["name"], m["status"], m["snr"]) for m in bad] == [("model.layers.1.self_attn.q_proj", "nonfinite", None)]
    chosen = select(result, top_percent=100, types=["self_attn.q_proj"])
    assert "model.layers.1.self_attn.q_proj" not in [m["name"] for m in chosen["modules"]]
    assert any("non-finite" in note for note in chosen["notes"])


def test_huge_finite_weights_are_scanned_not_called_nonfinite():
    """Weights near the float32 limit overflow the one-pass finiteness sum and the float32 Gram matrix: they are
    checked exactly and redone in float64, while a real inf is still reported."""
    torch.manual_seed(0)
    weights = torch.randn(2, 16, 12)
    weights[0, :2, 0] = 3e38
    weights[1, 2, 3] = float("inf")
    huge, infinite = scan_module.compute_group(weights, "gram", torch.float32, "cpu")
    exact = snr_from_singular_values(torch.linalg.svdvals(weights[0].double()), 16, 12)["snr"]
    assert huge["status"] == "ok" and huge["snr"] == pytest.approx(float(exact), rel=1e-9)
    assert infinite == {"status": "nonfinite"}


def test_resume_reuses_finished_matrices(tiny_llama, tmp_path, monkeypatch):
    out = tmp_path / "snr.json"
    real = scan_module.compute_group
    calls = []

    def failing(weights, *args):
        calls.append(weights.shape[0])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(weights, *args)

    monkeypatch.setattr(scan_module, "compute_group", failing)
    with pytest.raises(KeyboardInterrupt):
        scan(tiny_llama, out, batch_mib=0.01)  # tiny batches: one matrix each
    assert not out.exists()  # an interrupted scan leaves no snr.json
    done_before = sum(calls[:2])
    calls.clear()
    monkeypatch.setattr(scan_module, "compute_group", lambda weights, *a: calls.append(weights.shape[0]) or real(weights, *a))
    resumed = scan(tiny_llama, out, batch_mib=0.01, resume=True)
    computed_on_resume = sum(calls)
    fresh = scan(tiny_llama, tmp_path / "fresh.json")
    total = len([m for m in fresh["modules"] if "tied_to" not in m])
    assert done_before == 2 and computed_on_resume == total - done_before  # only the unfinished ones
    assert [m["snr"] for m in resumed["modules"]] == pytest.approx([m["snr"] for m in fresh["modules"]], rel=1e-9)
    assert not (tmp_path / "snr.json.partial.jsonl").exists()


def test_spectrum_json_has_the_reference_format(tiny_llama, tmp_path):
    scan(tiny_llama, tmp_path / "snr.json", spectrum_json=tmp_path / "spectrum.json")
    data = json.loads((tmp_path / "spectrum.json").read_text())
    assert data["model.layers.0.self_attn.q_proj"]["type"] == "self_attn.q_proj"
    assert data["model.layers.0.input_layernorm"] == {"snr": 1.0, "type": "input_layernorm"}
    assert set(next(iter(data.values()))) == {"snr", "type"}


def test_errors_are_one_line_and_leave_no_output(tmp_path, capsys):
    assert main(["scan", str(tmp_path / "missing"), "--out", str(tmp_path / "snr.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing" in err and "not found" in err
    (tmp_path / "empty").mkdir()
    with pytest.raises(SnrtuneError, match="no \\*.safetensors"):
        scan(tmp_path / "empty", tmp_path / "snr.json")
    with pytest.raises(SnrtuneError, match="unknown scan method 'qr'"):
        scan(tmp_path / "empty", tmp_path / "snr.json", method="qr")
    assert not (tmp_path / "snr.json").exists()


# ---------------------------------------------------------------- headers are validated, not trusted

def hand_made_model(tmp_path, header, data, header_len=None):
    from safetensors_files import write_raw

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    write_raw(model_dir / "model.safetensors", header, data, header_len)
    return model_dir


def test_a_valid_hand_made_file_reads_as_the_safetensors_library_reads_it(tmp_path):
    from safetensors_files import GOOD_DATA, two_matrices

    from snrtune.safetensors_header import read_safetensors_header

    model_dir = hand_made_model(tmp_path, two_matrices(), GOOD_DATA)
    entries, metadata = read_safetensors_header(model_dir / "model.safetensors")
    reference = load_file(model_dir / "model.safetensors")
    assert metadata == {"format": "pt"} and sorted(entries) == sorted(reference)
    for key, tensor in reference.items():
        assert entries[key].shape == tuple(tensor.shape) and entries[key].nbytes == tensor.numel() * 4
    result = scan(model_dir, tmp_path / "snr.json")
    by_name = {m["name"]: m for m in result["modules"]}
    assert by_name["model.layers.0.self_attn.k_proj"]["snr"] == pytest.approx(
        reference_snr(reference["model.layers.0.self_attn.k_proj.weight"]), rel=1e-6)


@pytest.mark.parametrize("case", sorted(__import__("safetensors_files").CORRUPT))
def test_corrupt_headers_are_refused_as_the_safetensors_library_refuses_them(case, tmp_path):
    """Each hand-made corrupt file is refused by the safetensors library too; scan's one-line error names the
    file and what is wrong (the command-line behaviour is in tests/bad_inputs/test_bad_inputs.py)."""
    from safetensors import safe_open
    from safetensors_files import CORRUPT, write_corrupt

    from snrtune.safetensors_header import read_safetensors_header

    file = write_corrupt(tmp_path / "model.safetensors", case)
    with pytest.raises(Exception):
        with safe_open(file, "pt") as handle:
            for key in handle.keys():
                handle.get_tensor(key)
    with pytest.raises(SnrtuneError) as caught:
        read_safetensors_header(file)
    message = str(caught.value)
    assert "\n" not in message and "model.safetensors" in message
    for word in CORRUPT[case][3]:
        assert word in message


def test_empty_matrix_gets_a_status_and_select_skips_it(tmp_path):
    header = {"model.layers.0.self_attn.q_proj.weight": {"dtype": "F32", "shape": [0, 8], "data_offsets": [0, 0]},
              "model.layers.1.self_attn.q_proj.weight": {"dtype": "F32", "shape": [6, 4], "data_offsets": [0, 96]}}
    from safetensors_files import matrix_bytes

    model_dir = hand_made_model(tmp_path, header, matrix_bytes(0))
    result = scan(model_dir, tmp_path / "snr.json")
    by_name = {m["name"]: m for m in result["modules"]}
    empty = by_name["model.layers.0.self_attn.q_proj"]
    assert (empty["status"], empty["snr"], empty["n_params"]) == ("empty", None, 0)
    assert by_name["model.layers.1.self_attn.q_proj"]["status"] == "ok"
    chosen = select(json.loads((tmp_path / "snr.json").read_text()), top_percent=100)
    assert [m["name"] for m in chosen["modules"]] == ["model.layers.1.self_attn.q_proj"]
    assert any("1 empty" in note for note in chosen["notes"])


def test_svd_overflow_is_a_status_and_select_still_works(tmp_path, capsys):
    """Finite float32 weights near 3e38 overflow the float32 SVD: status nonfinite_snr, snr null, never ranked."""
    torch.manual_seed(0)
    weights = {f"model.layers.{i}.mlp.up_proj.weight": torch.randn(8, 6) for i in range(4)}
    weights["model.layers.2.mlp.up_proj.weight"][:2, 0] = 3e38
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    save_file(weights, model_dir / "model.safetensors")
    assert main(["scan", str(model_dir), "--out", str(tmp_path / "snr.json"), "--method", "svd"]) == 0
    assert "1 nonfinite_snr" in capsys.readouterr().out
    data = json.loads((tmp_path / "snr.json").read_text())
    bad = [m for m in data["modules"] if m["status"] != "ok"]
    assert [(m["name"], m["status"], m["snr"]) for m in bad] == [("model.layers.2.mlp.up_proj", "nonfinite_snr", None)]
    assert main(["select", str(tmp_path / "snr.json"), "--top-percent", "100", "--out", str(tmp_path / "s.yaml")]) == 0
    sel = yaml_load(tmp_path / "s.yaml")
    assert len(sel["modules"]) == 3 and "model.layers.2.mlp.up_proj" not in [m["name"] for m in sel["modules"]]
    assert any("non-finite SNR" in note for note in sel["notes"])


def yaml_load(path):
    import yaml

    return yaml.safe_load(path.read_text())
