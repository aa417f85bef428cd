"""Bad inputs to `snrtune scan` and `snrtune select`: broken model directories and safetensors headers, bad
selection arguments and SNR files, a corrupt scan resume file. Each: one line, exit 2, no snr.json / sel.yaml
(docs/checks.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from bad_input_cases import check_bad_model, copy_model, model_cases, one_error_line, refused, shard
from safetensors_files import CORRUPT, write_corrupt

from snrtune import criteria
from snrtune.cli import main
from snrtune.fileio import OWNER_KEY, Owner
from snrtune.model_dir import check_model_dir

torch.set_num_threads(1)


@pytest.mark.parametrize("case", model_cases("scan"))
def test_bad_model_directory(case, tiny_llama, tmp_path, capsys):
    check_bad_model(case, "scan", tiny_llama, tmp_path, capsys)


def test_a_complete_sharded_model_is_accepted_and_scanned_whole(tiny_llama, tmp_path):
    model = copy_model(tiny_llama, tmp_path / "model")
    shard(model)
    whole = check_model_dir(tiny_llama, tokenizer=True)
    assert check_model_dir(model, tokenizer=True).keys() == whole.keys()
    assert main(["scan", str(model), "--out", str(tmp_path / "snr.json")]) == 0
    scanned = {m["param"] for m in json.loads((tmp_path / "snr.json").read_text())["modules"]}
    assert {k for k, e in whole.items() if len(e.shape) == 2} <= scanned


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


def test_scan_on_a_cuda_device_that_is_not_there(tiny_llama, tmp_path, capsys):
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    refused(["scan", tiny_llama, "--out", tmp_path / "s.json", "--device", f"cuda:{count}"], capsys,
            f"--device cuda:{count} requested but this machine has")
    assert not (tmp_path / "s.json").exists()


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
SELECT_CASES["--types '' (no type)"] = (["--top-percent", "50", "--types", ""], "--types '' names no module type")
SELECT_CASES["--types ' , '"] = (["--top-percent", "50", "--types", " , "], "names no module type")
SELECT_CASES["--random --seed -1"] = (["--top-percent", "50", "--random", "--seed", "-1"],
                                      "argument --seed: -1 is out of range; expected a seed in [0, 2**32)")
SELECT_CASES["--random --seed 2**32"] = (["--top-percent", "50", "--random", "--seed", str(2**32)],
                                         "argument --seed: 4294967296 is out of range")


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


def test_select_refuses_an_snr_file_whose_module_lacks_its_type(tmp_path, capsys):
    module = {"name": "model.layers.0.self_attn.q_proj", "param": "model.layers.0.self_attn.q_proj.weight",
              "layer": 0, "expert": None, "shape": [4, 4], "snr": 0.5, "status": "ok"}  # no "type"
    (tmp_path / "snr.json").write_text(json.dumps({"model": "m", "modules": [module], "not_scannable": [], "tied": {},
                                                   "total_params": 16, "parameters": {module["param"]: [4, 4]}}))
    out = tmp_path / "sel.yaml"
    assert main(["select", str(tmp_path / "snr.json"), "--top-percent", "50", "--out", str(out)]) == 2
    assert "snr.json': key 'modules[0].type': is missing" in one_error_line(capsys, "select")
    assert not out.exists()


def test_select_never_crashes_on_entries_without_an_snr(tmp_path, capsys):
    for args in (["--top-percent", "100"], ["--top-percent", "100", "--compat", "spectrum"], ["--budget-params", "20"]):
        assert main(["select", str(small_scan(tmp_path / "snr.json")), "--out", str(tmp_path / "s.yaml"), *args]) == 0
        assert "1 matrices are not ranked (1 without an SNR)" in capsys.readouterr().out or "--compat" in args


def test_a_module_included_twice_is_selected_once(tmp_path, capsys):
    """--types lm_head --include lm_head names one matrix twice; the selection lists it once (train refuses a
    module listed twice)."""
    scan = json.loads(small_scan(tmp_path / "snr.json").read_text())
    scan["modules"].append({"name": "lm_head", "param": "lm_head.weight", "type": "lm_head", "layer": None,
                            "expert": None, "shape": [4, 4], "snr": 0.9, "status": "ok"})
    scan["parameters"]["lm_head.weight"] = [4, 4]
    scan["total_params"] = 64
    (tmp_path / "snr.json").write_text(json.dumps(scan))
    out = tmp_path / "sel.yaml"
    assert main(["select", str(tmp_path / "snr.json"), "--top-percent", "100", "--types", "lm_head", "--include",
                 "lm_head", "--out", str(out)]) == 0
    from snrtune.spectrum.selection_file import load_selection

    assert [m["name"] for m in load_selection(out)["modules"]] == ["lm_head"]
    capsys.readouterr()


# ---------------------------------------------------------------- scan: a corrupt resume file

def resume_header(model_dir: Path) -> str:
    """The first line of scan's resume file: its settings, with scan's mark (the file is scan's own)."""
    owner = Owner("scan", "--out .partial.jsonl")
    return json.dumps({"model_dir": str(Path(model_dir).resolve()), "method": "gram", "precision": "float32",
                       "criteria": [c.name for c in criteria.spectral()], OWNER_KEY: owner.record()})


# case: (resume file content from the model directory, the one note expected)
RESUME_CASES = {
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


@pytest.mark.parametrize("content", [b"\x00\xff garbage\n", b"{model_dir\n", b'{"model_dir": "m"}\n'])
def test_a_resume_file_scan_did_not_write_is_never_replaced(content, tiny_llama, tmp_path, capsys):
    """A file at OUT.partial.jsonl without scan's mark (unreadable, another format, a user's) is not scan's to
    remove: one line, with or without --resume, and the file is left as it was."""
    out = tmp_path / "snr.json"
    partial = Path(f"{out}.partial.jsonl")
    partial.write_bytes(content)
    for resume in ([], ["--resume"]):
        refused(["scan", tiny_llama, "--out", out, *resume], capsys, "--out's .partial.jsonl", "exists and was not "
                "written by snrtune", "remove it by hand")
        assert partial.read_bytes() == content and not out.exists()
