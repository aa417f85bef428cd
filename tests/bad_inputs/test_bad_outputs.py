"""Outputs belong to the step that wrote them: no command removes or overwrites what snrtune did not write, or
another step's output, or a file it derives from its output (OUT.partial, OUT.partial.jsonl, OUT.stats.json,
OUT.samples.jsonl) that is not its own; a symbolic link is never written through; ``~`` is expanded once; a second
process writing the same output fails. Each refusal: one line, exit 2, and every file under the work directory
byte-identical before and after (docs/checks.md, "Outputs")."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from bad_input_cases import GOOD, jsonl, mark, one_error_line, refused, work_files

from snrtune.cli import main
from snrtune.fileio import Owner, mark_line, output_lock

torch.set_num_threads(1)


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    """A work directory as a user has it (the working directory of each case): a model, results, runs, data, files of
    the user's own, and the outputs of several snrtune steps (each marked with its step)."""
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
    # other steps' outputs
    (mark(tmp_path / "runs/spectrum-s0", "train") / "metrics.json").write_text('{"status": "finished"}')
    (mark(tmp_path / "models/other", "fetch") / "config.json").write_text('{"model_type": "llama"}')
    (tmp_path / "models/other/model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    (mark(tmp_path / "merged/lora-s0", "merge") / "model.safetensors").write_bytes(b"merged weights")
    (mark(tmp_path / "results/runs/lora-s0", "train") / "metrics.json").write_text("{}")
    (mark(tmp_path / "results/model", "fetch") / "config.json").write_text("{}")
    (mark(tmp_path / "rep", "report") / "bench.tsv").write_text("s\th:m:s\n1.0\t0:00:01\n")
    (tmp_path / "old").mkdir()
    (tmp_path / "old/snrtune_output.json").write_text('{"written_by": "snrtune", "snrtune_version": "0.0.1"}')
    (tmp_path / "old/model.safetensors").write_bytes(b"an older snrtune's output")
    (tmp_path / "s.json").write_text(json.dumps({"snrtune_output": Owner("scan").record(), "modules": []}))
    (tmp_path / "sel.yaml").write_text("# snrtune selection\n" + mark_line(Owner("select"), yaml_comment=True)
                                       + "unfrozen_parameters: ['^a']\n")
    (tmp_path / "link.json").symlink_to(tmp_path / "NOTES.txt")
    # siblings a step derives from its output, of the user's own
    (tmp_path / "mine.json.partial.jsonl").write_text("my own lines\n")
    (tmp_path / "ln.json.partial.jsonl").symlink_to(tmp_path / "NOTES.txt")
    (tmp_path / "sel2.yaml.stats.json").write_text('{"mine": true}')
    (tmp_path / "sel3.yaml.stats.json").write_text("{}")
    (tmp_path / "e.samples.jsonl").write_text('{"mine": true}\n')
    (tmp_path / "run.partial").mkdir()
    (tmp_path / "run.partial/notes.txt").write_text("my run notes")
    (tmp_path / "run2.partial").write_text("a file")
    (tmp_path / "run3.partial").symlink_to(tmp_path / "mine")
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
    # another step's output (a typo away): the marker says which step wrote it
    "merge --out a training run": (["merge", "runs/lora-s0", "--base", "model", "--out", "runs/spectrum-s0"],
                                   "--out runs/spectrum-s0 is an existing directory that was written by `snrtune train` "
                                   "(--out); `snrtune merge` (--out) replaces only its own output"),
    "report --out a training run in its results": (["report", "results", "--out", "results/runs/lora-s0"],
                                                   "--out results/runs/lora-s0 is an existing directory that was "
                                                   "written by `snrtune train`"),
    "report --out the fetched model in its results": (["report", "results", "--out", "results/model"],
                                                      "--out results/model is an existing directory that was written "
                                                      "by `snrtune fetch`"),
    "train --out another fetched model": (TRAIN + ["--out", "models/other"],
                                          "--out models/other is an existing directory that was written by `snrtune "
                                          "fetch` (--out); `snrtune train` (--out) replaces only its own output"),
    "pick --out a merged model": (["pick", "runs/lora-s0", "--out", "merged/lora-s0"],
                                  "--out merged/lora-s0 is an existing directory that was written by `snrtune merge`"),
    "fetch --out a report": (["fetch", "model", "--out", "rep"],
                             "--out rep is an existing directory that was written by `snrtune report`"),
    "fetch --out an older snrtune's output": (["fetch", "model", "--out", "old"],
                                              "--out old is an existing directory that was written by an older "
                                              "snrtune that did not record its step"),
    # a file output onto a file snrtune did not write, or another step's
    "scan --out the training data": (["scan", "model", "--out", "d.jsonl"],
                                     "--out d.jsonl is an existing file that was not written by snrtune (it holds no "
                                     "snrtune_output mark); `snrtune scan` (--out) replaces only its own output: "
                                     "expected a new path, or --force to replace it"),
    "select --out the training data": (["select", "snr.json", "--top-percent", "50", "--out", "d.jsonl"],
                                       "--out d.jsonl is an existing file that was not written by snrtune"),
    "prefetch --out another model's config.json": (["prefetch", "--data", "d.jsonl", "--out",
                                                    "models/other/config.json"],
                                                   "--out models/other/config.json is an existing file that was not "
                                                   "written by snrtune"),
    "evaluate --out another model's weights": (["evaluate", "model", "--tasks", "x", "--out",
                                                "models/other/model.safetensors"],
                                               "--out models/other/model.safetensors is an existing file that was not "
                                               "written by snrtune"),
    "scan --out a symbolic link to a user's file": (["scan", "model", "--out", "link.json"],
                                                    "--out link.json is a symbolic link; snrtune never writes through "
                                                    "one"),
    "select --out a scan's snr.json": (["select", "snr.json", "--top-percent", "50", "--out", "s.json"],
                                       "--out s.json is an existing file that was written by `snrtune scan` (--out); "
                                       "`snrtune select` (--out) replaces only its own output"),
    "evaluate --out a selection": (["evaluate", "model", "--tasks", "x", "--out", "sel.yaml"],
                                   "--out sel.yaml is an existing file that was written by `snrtune select` (--out)"),
    "scan --spectrum-json onto a scan's --out": (["scan", "model", "--out", "new.json", "--spectrum-json", "s.json"],
                                                 "--spectrum-json s.json is an existing file that was written by "
                                                 "`snrtune scan` (--out); `snrtune scan` (--spectrum-json)"),
    # siblings derived from --out: created only when absent or the step's own, never through a link
    "scan --out X with a user's X.partial.jsonl": (["scan", "model", "--out", "mine.json"],
                                                    "--out's .partial.jsonl mine.json.partial.jsonl exists and was not "
                                                    "written by snrtune; `snrtune scan` (--out .partial.jsonl) would "
                                                    "replace it: remove it by hand"),
    "scan --out X with X.partial.jsonl a link": (["scan", "model", "--out", "ln.json"],
                                                 "--out's .partial.jsonl ln.json.partial.jsonl is a symbolic link; "
                                                 "snrtune never writes through one"),
    "select --compat spectrum with a user's OUT.stats.json": (
        ["select", "snr.json", "--top-percent", "50", "--compat", "spectrum", "--out", "sel2.yaml"],
        "--out's .stats.json sel2.yaml.stats.json exists and was not written by snrtune"),
    "select --compat spectrum whose OUT.stats.json is its input": (
        ["select", "sel3.yaml.stats.json", "--top-percent", "50", "--compat", "spectrum", "--out", "sel3.yaml"],
        "--out's .stats.json sel3.yaml.stats.json is the input snr_json sel3.yaml.stats.json"),
    "evaluate --log-samples with a user's OUT.samples.jsonl": (
        ["evaluate", "model", "--tasks", "x", "--log-samples", "--out", "e.json"],
        "--out's .samples.jsonl e.samples.jsonl exists and was not written by snrtune"),
    "train --out X with a user's X.partial/": (TRAIN + ["--out", "run"],
                                               "--out's .partial run.partial exists and was not written by snrtune"),
    "train --resume --out X with a user's X.partial/": (TRAIN + ["--out", "run", "--resume"],
                                                        "--out's .partial run.partial exists and was not written by "
                                                        "snrtune"),
    "train --out X with X.partial a file": (TRAIN + ["--out", "run2"],
                                            "--out's .partial run2.partial is a file; expected the directory"),
    "train --out X with X.partial a link": (TRAIN + ["--out", "run3"],
                                            "--out's .partial run3.partial is a symbolic link; snrtune never writes "
                                            "through one"),
    "report --benchmark inside its --out": (["report", "results", "--benchmark", "m/lora-s0=rep/bench.tsv", "--out",
                                             "rep"], "--out rep contains the input --benchmark rep/bench.tsv"),
}


@pytest.mark.parametrize("case", list(OUTPUT_CASES))
def test_no_output_replaces_what_its_step_did_not_write(case, user_dir, capsys):
    argv, expected = OUTPUT_CASES[case]
    before = work_files(user_dir)
    assert main(argv) == 2
    assert one_error_line(capsys, argv[0]).startswith(f"snrtune {argv[0]}: error: {expected}")
    assert work_files(user_dir) == before  # nothing removed, overwritten or created


def scan_args(model, out, *extra):
    return ["scan", str(model), "--out", str(out), *map(str, extra)]


def test_a_step_replaces_its_own_file_and_force_replaces_a_users(tiny_llama, tmp_path, capsys):
    """scan twice onto one --out: the second replaces the first (its mark says scan --out), as the workflow re-runs
    a step; a user's file only with --force; a link with --force is replaced itself, never its target."""
    out = tmp_path / "snr.json"
    assert main(scan_args(tiny_llama, out)) == 0
    first = json.loads(out.read_text())
    assert first["snrtune_output"]["step"] == "scan" and first["snrtune_output"]["output"] == "--out"
    assert main(scan_args(tiny_llama, out)) == 0
    mine = tmp_path / "mine.json"
    mine.write_text('{"mine": true}')
    capsys.readouterr()
    refused(scan_args(tiny_llama, mine), capsys, "--force to replace it")
    assert main(scan_args(tiny_llama, mine, "--force")) == 0 and "modules" in json.loads(mine.read_text())
    target, link = tmp_path / "target.txt", tmp_path / "link.json"
    target.write_text("keep me")
    link.symlink_to(target)
    assert main(scan_args(tiny_llama, link, "--force")) == 0
    assert target.read_text() == "keep me" and not link.is_symlink() and "modules" in json.loads(link.read_text())
    capsys.readouterr()


def test_the_spectrum_json_has_no_room_for_a_mark(tiny_llama, tmp_path, capsys):
    """The reference tool's SNR format cannot hold snrtune's mark: an existing --spectrum-json is replaced only with
    --force, even one scan wrote."""
    args = scan_args(tiny_llama, tmp_path / "snr.json", "--spectrum-json", tmp_path / "spectrum.json")
    assert main(args) == 0
    capsys.readouterr()
    refused(args, capsys, "--spectrum-json", "was not written by snrtune", "--force")
    assert main(args + ["--force"]) == 0
    capsys.readouterr()


def test_select_and_its_stats_sibling_are_replaced_by_select(tmp_path, capsys):
    from test_bad_scan_select import small_scan

    snr = small_scan(tmp_path / "snr.json")
    for args in (["--top-percent", "50"], ["--top-percent", "50", "--compat", "spectrum"]):
        for _ in range(2):
            assert main(["select", str(snr), "--out", str(tmp_path / "sel.yaml"), *args]) == 0
    stats = json.loads((tmp_path / "sel.yaml.stats.json").read_text())
    assert stats["snrtune_output"]["output"] == "--out .stats.json"
    capsys.readouterr()


def test_a_quoted_tilde_is_expanded_once(tmp_path, monkeypatch, capsys):
    """--out '~/sel.yaml' (the shell leaves a quoted ~ alone) is checked and written as $HOME/sel.yaml: there is
    no ./~ directory afterwards."""
    from test_bad_scan_select import small_scan

    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    snr = small_scan(work / "snr.json")
    assert main(["select", str(snr), "--top-percent", "50", "--out", "~/sel.yaml"]) == 0
    assert (home / "sel.yaml").is_file() and not (work / "~").exists()
    (home / "sel.yaml").write_text("mine: true\n")
    capsys.readouterr()
    refused(["select", str(snr), "--top-percent", "50", "--out", "~/sel.yaml"], capsys,
            f"--out {home / 'sel.yaml'} is an existing file that was not written by snrtune")
    capsys.readouterr()


def test_a_stop_signal_mid_write_leaves_nothing(tmp_path):
    """SIGTERM (Slurm's or Snakemake's stop) while a step writes its output: the command exits 143 through its
    cleanup, so no half-written hidden .m.tmp-* directory is left (a SIGKILL's leftover: the next run removes it,
    test_bad_fetch.py)."""
    import signal

    from snrtune.cli import terminated_as_exit
    from snrtune.fileio import atomic_dir

    with pytest.raises(SystemExit) as stopped, terminated_as_exit():
        with atomic_dir(tmp_path / "m", Owner("fetch")) as tmp:
            (tmp / "model.safetensors").write_bytes(b"half of it")
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10**6):  # the handler runs between two bytecodes
                pass
    assert stopped.value.code == 143 and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["scan", "train"])
def test_a_second_writer_of_one_output_fails(command, tiny_llama, tmp_path, capsys):
    """Two `snrtune scan` (or train) on one --out at once: the second fails in one line, naming the first's pid,
    and leaves the output, its partial file or directory, and the first one's lock alone."""
    out = tmp_path / ("snr.json" if command == "scan" else "run")
    data = tmp_path / "d.jsonl"
    data.write_bytes(jsonl(*[GOOD] * 8))
    argv = scan_args(tiny_llama, out) if command == "scan" else [
        "train", str(tiny_llama), "--method", "lora", "--data", str(data), "--out", str(out)]
    with output_lock(out):
        before = work_files(tmp_path)
        refused(argv, capsys, f"--out {out} is being written by another snrtune process (pid {os.getpid()}); expected "
                "one writer at a time")
        assert work_files(tmp_path) == before
    assert not list(tmp_path.glob(".*.lock"))


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



def strict_json(path: Path):
    """JSON as the standard defines it: NaN and Infinity are refused."""
    def refuse(name):
        raise ValueError(f"{path} holds {name}")
    return json.loads(path.read_text(), parse_constant=refuse)


def test_non_finite_values_are_written_as_null(tmp_path):
    import numpy as np

    from snrtune.fileio import json_safe, write_json

    record = {"train_loss": [[1, 2.5], [2, float("nan")]], "eval": (float("inf"), -float("inf")),
              "peak": np.float32(1.5), "bad": np.float64("nan"), "steps": 3, "ok": True, "name": "nan"}
    write_json(tmp_path / "m.json", json_safe(record))
    assert strict_json(tmp_path / "m.json") == {"train_loss": [[1, 2.5], [2, None]], "eval": [None, None],
                                                "peak": 1.5, "bad": None, "steps": 3, "ok": True, "name": "nan"}


