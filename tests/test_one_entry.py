"""A method, a control kind and a task are each one table entry (snrtune.method_registry, snrtune.tasks): with
only that entry added, the workflow plans their jobs, the resource estimate prices them and the evaluation
and report read them. The dry run is in-process (snakemake.cli.main), so the registered entries are seen by
the Snakefile exactly as a new BUILTIN entry would be."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from snrtune import tasks
from snrtune.method_registry import MethodSpec, registered
from snrtune.workflow import config as wc

ROOT = Path(__file__).resolve().parents[1]

# a new method: LoRA on every linear layer, under its own name (only its table entry says what it is)
LORA_WIDE = MethodSpec("lora-wide", selection_kind=None, four_bit=False, is_adapter=True, merge="adapter",
                       label="lora-wide", prepare="snrtune.training.methods:prepare_lora",
                       train_overrides={"lora_r": 64})
# a new control of an existing kind the workflow did not run before: Spectrum on the lowest-SNR modules
SPECTRUM_LOWEST = MethodSpec("spectrum-lowest", selection_kind="lowest", four_bit=False, is_adapter=False,
                             merge="spectrum-delta", label="spectrum-lowest",
                             prepare="snrtune.training.methods:prepare_spectrum", mirrors="spectrum")
MY_TASK = tasks.TaskSpec("my_qa", 3, "f1", role="target")


def dry_run(config: dict, workdir: Path, capsys) -> str:
    from snakemake.cli import main

    (workdir / "c.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit) as exit_info:
        main(["-n", "-p", "--cores", "1", "-s", str(ROOT / "Snakefile"), "-d", str(workdir),
              "--configfile", str(workdir / "c.yaml")])
    out = capsys.readouterr()
    assert exit_info.value.code == 0, out.err[-4000:]
    return out.out + out.err


def test_a_new_method_control_and_task_are_planned_priced_and_evaluated(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(tasks, "_TABLE", {**tasks._TABLE, MY_TASK.name: MY_TASK})
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config["methods"] = ["spectrum", "spectrum-lowest", "lora-wide"]
    config["top_percent"] = [25]
    config["evaluate"]["tasks"] = [{"name": "my_qa"}, {"name": "snrtune_retention"}]
    config["evaluate"]["include_path"] = None
    config["report"] = {"target_task": "my_qa", "retention_tasks": ["snrtune_retention"]}
    with registered(LORA_WIDE), registered(SPECTRUM_LOWEST):
        log = dry_run(config, tmp_path, capsys)
        # the control's selection comes from `snrtune select --lowest`, its run trains from it
        assert "--lowest --seed 0" in log and "select/t25-lowest-s0.yaml" in log
        for run in ("spectrum-t25-s0", "spectrum-lowest-t25-s0", "lora-wide-s0"):
            assert f"runs/{run}" in log and f"eval/{run}.json" in log
        assert "--method lora-wide" in log and "--method spectrum-lowest" in log
        # the task's few-shot count reaches evaluate from the table alone (the config names only the task)
        assert "--tasks my_qa,snrtune_retention" in log
        # priced: a GPU plan from the parameter count the config states
        gpu = wc.validate_config({"models": {"m": {"source": "org/m", "params_b": 8, "device": "cuda"}},
                                  "methods": ["full", "lora-wide", "spectrum-lowest"], "top_percent": [25]},
                                 wc.load_schema(ROOT / "workflow/schemas/config.schema.yaml"))
        plans = {run: wc.train_resources(gpu, "m", run, tmp_path / "absent") for run in wc.runs(gpu)}
        assert set(plans) == {"full-s0", "lora-wide-s0", "spectrum-lowest-t25-s0"}
        assert all(plan["gpus"] >= 1 and plan["mem_mb"] > 0 for plan in plans.values())
        assert plans["full-s0"]["gpus"] >= plans["lora-wide-s0"]["gpus"]
        spectrum = wc.train_resources(gpu | {"methods": ["spectrum"]}, "m", "spectrum-t25-s0", tmp_path / "absent")
        assert plans["spectrum-lowest-t25-s0"] == spectrum  # a control costs what the method it mirrors costs

    from snrtune.evaluation.options import parse_fewshot
    assert parse_fewshot("", ["my_qa"]) == {"my_qa": 3}
