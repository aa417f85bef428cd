"""Bad inputs to `snrtune report`: the report reads every file it finds or stops. A file it cannot parse, two
evaluations of one run and task with different scores, an evaluation of another model's run, impossible values,
a selection file stating a key twice, two model names that become one file name: each one line naming the file,
exit 2, no REPORT_DIR (docs/checks.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from bad_input_cases import refused
from report_fixture import Results, bernoulli

from snrtune.cli import main


def results(root: Path) -> Results:
    """A results directory the report reads: the base model and one lora run of model m (x1/, x2/)."""
    made = Results(root)
    made.add("m", "base", toolcall=bernoulli(0.5, 60, 1))
    made.add("m", "lora", toolcall=bernoulli(0.7, 60, 2), seed=0)
    return made


def edit(path: Path, change) -> None:
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


def copy_with(src: Path, dst: Path, change) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(src.read_text())
    edit(dst, change)


def set_key(path: str, value):
    """A change setting a dotted key of a record ("results.snrtune_ppl.word_perplexity")."""
    def change(record):
        *parents, last = path.split(".")
        for key in parents:
            record = record[key]
        if value is KeyError:
            record.pop(last)
        else:
            record[last] = value
    return change


LORA_EVAL, LORA_METRICS = "x2/a.json", "x2/b.json"
# case: (change to the results directory root, the file the line must name, words it must contain)
REPORT_CASES = {
    "a truncated eval.json": (lambda r: (r / LORA_EVAL).write_text((r / LORA_EVAL).read_text()[:200]), LORA_EVAL,
                              ["the report cannot read it: not valid JSON", "a truncated eval.json?"]),
    "a file that is not UTF-8": (lambda r: (r / "notes.json").write_bytes(b'{"a": "caf\xe9"}'), "notes.json",
                                 ["not UTF-8"]),
    "a YAML file that is not YAML": (lambda r: (r / "sel.yaml").write_text("a: [1\n"), "sel.yaml",
                                     ["the report cannot read it", "is not valid YAML"]),
    "two evaluations of one run and task with different scores": (
        lambda r: copy_with(r / LORA_EVAL, r / "copy/eval.json", set_key("results.snrtune_toolcall.acc", 0.1)),
        "copy/eval.json", ["x2/a.json: run 'm/lora-s0' on task 'snrtune_toolcall' scores acc=0.7333",
                           "copy/eval.json scores it acc=0.1", "expected one evaluation per run and task"]),
    "an evaluation of another model's run": (
        lambda r: edit(r / LORA_EVAL, set_key("run.id", "other/lora-s0")), LORA_EVAL,
        ["run.id is 'other/lora-s0', a run of another model than run.model 'm'"]),
    "an evaluation of another model (evaluated_model)": (
        lambda r: edit(r / LORA_EVAL, set_key("evaluated_model", "other")), LORA_EVAL,
        ["run.model is 'm', but the model evaluated is 'other'"]),
    "a negative stderr": (lambda r: edit(r / LORA_EVAL, set_key("results.snrtune_toolcall.acc_stderr", -0.1)),
                          LORA_EVAL, ["results.snrtune_toolcall.acc_stderr is -0.1: a standard error cannot be negative"]),
    "a negative perplexity": (lambda r: edit(r / LORA_EVAL, set_key("results.snrtune_ppl.word_perplexity", -3.0)),
                              LORA_EVAL, ["results.snrtune_ppl.word_perplexity is -3.0: a perplexity is at least 1"]),
    "a run without its id": (lambda r: edit(r / LORA_EVAL, set_key("run.id", KeyError)), LORA_EVAL,
                             ["run.id is missing or not a string"]),
    "a run without its model": (lambda r: edit(r / LORA_METRICS, set_key("run.model", KeyError)), LORA_METRICS,
                                ["run.model is missing or not a string"]),
    "a string seed": (lambda r: edit(r / LORA_EVAL, set_key("run.seed", "0")), LORA_EVAL,
                      ["run.seed is '0': expected an integer or null"]),
    "a loss step that is not a number": (
        lambda r: edit(r / LORA_METRICS, set_key("train_loss", [["5", 1.0], ["10", 0.9]])), LORA_METRICS,
        ["train_loss holds a step that is not an integer"]),
    "a selection file stating a key twice": (
        lambda r: (r / "t25.yaml").write_text("model: m\nmodules: []\ntrainable_params: 5\ntrainable_params: 6\n"
                                              "unfrozen_parameters: ['^a']\n"), "t25.yaml",
        ["key 'trainable_params' appears twice"]),
    "a selection with a bad key": (
        lambda r: (r / "t25.yaml").write_text(yaml.safe_dump({"model": "m", "modules": [], "trainable_params": "lots",
                                                              "unfrozen_parameters": [r"^model\.layers\.0\."]})),
        "t25.yaml", ["key 'trainable_params': 'lots' is not of type"]),
    "two model names that become one file name": (
        lambda r: [Results(r / name.replace("/", "-")).add(name, "base", toolcall=bernoulli(0.5, 60, 3))
                   for name in ("a/b", "a_b")],
        "a.json", ["model 'a_b' and model 'a/b'", "share the file name 'a_b'", "expected model names that differ"]),
}


@pytest.mark.parametrize("case", list(REPORT_CASES))
def test_a_file_the_report_cannot_trust(case, tmp_path, capsys):
    change, name, words = REPORT_CASES[case]
    root = tmp_path / "results"
    results(root)
    change(root)
    out = tmp_path / "report"
    refused(["report", root, "--out", out], capsys, name, *words)
    assert not out.exists() and not list(tmp_path.glob(".report.*"))


def test_the_same_results_make_a_report(tmp_path, capsys):
    """The fixture the cases change is a valid results directory; hidden directories (a step's temporary files,
    .snakemake/) are not read."""
    root = tmp_path / "results"
    results(root)
    (root / ".snakemake").mkdir()
    (root / ".snakemake/broken.json").write_text("{")
    (root / "x2/.a.json.tmp-123").write_text("{")
    assert main(["report", str(root), "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report/report.html").is_file()
    capsys.readouterr()


def test_a_copied_evaluation_with_the_same_scores_is_one(tmp_path, capsys):
    root = tmp_path / "results"
    results(root)
    (root / "copy").mkdir()
    (root / "copy/eval.json").write_text((root / LORA_EVAL).read_text())
    assert main(["report", str(root), "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report/runs.csv").read_text().count("m/lora-s0,") == 3  # one row per task, not two
    capsys.readouterr()
