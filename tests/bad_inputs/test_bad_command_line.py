"""Bad command-line values: one line naming the argument (no usage block), exit 2, before the command runs, and
nothing in the work directory changed (docs/checks.md, "command-line values")."""

from __future__ import annotations

import pytest
from bad_input_cases import one_error_line, work_files

from snrtune.cli import main


@pytest.fixture
def work_dir(tmp_path, monkeypatch):
    (tmp_path / "model").mkdir()
    (tmp_path / "model/config.json").write_text('{"model_type": "llama"}')
    (tmp_path / "snr.json").write_text("{}")
    (tmp_path / "d.jsonl").write_text('{"instruction": "q", "output": "a"}\n')
    monkeypatch.chdir(tmp_path)
    return tmp_path


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
    "evaluate --seed -5": (["evaluate", "model", "--tasks", "x", "--out", "e.json", "--seed", "-5"],
                           "argument --seed: -5 is out of range; expected a seed in [0, 2**32)"),
    "evaluate --seed 2**32": (["evaluate", "model", "--tasks", "x", "--out", "e.json", "--seed", str(2**32)],
                              "argument --seed: 4294967296 is out of range"),
    "evaluate --seed x": (["evaluate", "model", "--tasks", "x", "--out", "e.json", "--seed", "x"],
                          "argument --seed: 'x' is not an integer"),
    "evaluate --max-batch-size 0": (["evaluate", "model", "--tasks", "x", "--out", "e.json", "--batch-size", "auto",
                                     "--max-batch-size", "0"], "argument --max-batch-size: 0 is out of range"),
    "select --seed -1": (["select", "snr.json", "--top-percent", "50", "--random", "--seed", "-1", "--out", "s.yaml"],
                         "argument --seed: -1 is out of range"),
    "train with an unknown method": (["train", "model", "--method", "qlora2", "--data", "d.jsonl", "--out", "r"],
                                     "argument --method: invalid choice: 'qlora2'"),
}




@pytest.mark.parametrize("case", list(VALUE_CASES))
def test_bad_command_line_values_are_one_line_before_any_work(case, work_dir, capsys):
    argv, expected = VALUE_CASES[case]
    before = work_files(work_dir)
    assert main(argv) == 2
    assert one_error_line(capsys, argv[0]).startswith(f"snrtune {argv[0]}: error: {expected}")
    assert work_files(work_dir) == before


@pytest.mark.parametrize("argv, expected", [
    (["bogus"], "snrtune: error: unknown command 'bogus'"),
])
def test_an_unknown_command(argv, expected, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(expected), err
