"""A method, a selection criterion and a task are each one table entry (snrtune.method_registry, snrtune.criteria,
snrtune.tasks): with only that entry added, the workflow plans their jobs, the resource estimate prices them and
the evaluation and report read them. The dry run is in-process (snakemake.cli.main), so the registered entries
are seen by the Snakefile exactly as a new BUILTIN entry would be."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from snrtune import criteria, tasks
from snrtune.criteria import Criterion
from snrtune.method_registry import MethodSpec, registered
from snrtune.workflow.plan import runs, train_resources
from snrtune.workflow.schema import load_schema, validate_config

ROOT = Path(__file__).resolve().parents[2]

# a new method: LoRA on every linear layer, under its own name (only its table entry says what it is)
LORA_WIDE = MethodSpec("lora-wide", selection_kind=None, four_bit=False, is_adapter=True, merge="adapter",
                       label="lora-wide", prepare="snrtune.training.methods:prepare_lora",
                       train_overrides={"lora_r": 64})
# a new selection criterion: the largest squared Frobenius norm first (its controls spectrum-frobenius and
# laser-qlora-frobenius follow from this entry alone)
FROBENIUS = Criterion("frobenius", lambda singular, n, m: singular.square().sum(-1), "spectrum", "highest",
                      "Frobenius²", "a made-up criterion of the tests")
MY_TASK = tasks.TaskSpec("my_qa", 3, "f1", role="target")


def dry_run(config: dict, workdir: Path, capsys) -> str:
    from snakemake.cli import main

    (workdir / "c.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit) as exit_info:
        main(["-n", "-p", "--cores", "1", "-s", str(ROOT / "workflow" / "Snakefile"), "-d", str(workdir),
              "--configfile", str(workdir / "c.yaml")])
    out = capsys.readouterr()
    assert exit_info.value.code == 0, out.err[-4000:]
    return out.out + out.err


def test_a_new_method_control_and_task_are_planned_priced_and_evaluated(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(tasks, "_TABLE", {**tasks._TABLE, MY_TASK.name: MY_TASK})
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config["methods"] = ["spectrum", "lora-wide"]
    config["top_percent"] = [25]
    config["selection"] = {"criteria": ["snr", "frobenius"]}
    config["evaluate"]["tasks"] = [{"name": "my_qa"}, {"name": "snrtune_retention"}]
    config["evaluate"]["include_path"] = None
    config["report"] = {"target_task": "my_qa", "retention_tasks": ["snrtune_retention"]}
    with registered(LORA_WIDE), criteria.registered(FROBENIUS):
        log = dry_run(config, tmp_path, capsys)
        # the criterion's selection comes from `snrtune select --criterion frobenius`, its control trains from it
        assert "--criterion frobenius --seed 0" in log and "select/t25-frobenius-s0.yaml" in log
        for run in ("spectrum-t25-s0", "spectrum-frobenius-t25-s0", "lora-wide-s0"):
            assert f"runs/{run}" in log and f"eval/{run}.json" in log
        assert "--method lora-wide" in log and "--method spectrum-frobenius" in log
        # the task's few-shot count reaches evaluate from the table alone (the config names only the task)
        assert "--tasks my_qa,snrtune_retention" in log
        # priced: a GPU plan from the parameter count the config states
        gpu = validate_config({"models": {"m": {"source": "org/m", "params_b": 8, "device": "cuda"}},
                               "methods": ["full", "lora-wide", "spectrum"], "top_percent": [25],
                               "selection": {"criteria": ["snr", "frobenius"]}},
                              load_schema(ROOT / "workflow/schemas/config.schema.yaml"))
        plans = {run: train_resources(gpu, "m", run, tmp_path / "absent") for run in runs(gpu)}
        assert set(plans) == {"full-s0", "lora-wide-s0", "spectrum-t25-s0", "spectrum-frobenius-t25-s0"}
        assert all(plan["gpus"] >= 1 and plan["mem_mb"] > 0 for plan in plans.values())
        assert plans["full-s0"]["gpus"] >= plans["lora-wide-s0"]["gpus"]
        assert plans["spectrum-frobenius-t25-s0"] == plans["spectrum-t25-s0"]  # a control costs what its method costs

    from snrtune.evaluation.options import parse_fewshot
    assert parse_fewshot("", ["my_qa"]) == {"my_qa": 3}


def test_the_report_compares_a_new_criterion_with_the_snr_selection(tmp_path):
    """Rendered end to end: the new criterion's control gets its row in the criteria table (its difference against
    the SNR selection from the comparisons), its selection a place in the overlap heatmap, and the verdict
    sentence names it."""
    import pandas as pd
    import yaml

    from report_fixture import Results, bernoulli
    from snrtune.report import report

    results = Results(tmp_path / "results")
    with criteria.registered(FROBENIUS):
        results.add("m", "base", bernoulli(0.1, 60, 1), seed=None)
        results.add("m", "spectrum", bernoulli(0.5, 60, 2), t=25, seed=0, kind="snr")
        results.add("m", "spectrum-frobenius", bernoulli(0.5, 60, 3), t=25, seed=0)
        for kind, layers in (("snr", (0, 1)), ("frobenius", (1, 2))):
            modules = [{"name": f"model.layers.{layer}.mlp.up_proj", "type": "mlp.up_proj", "layer": layer}
                       for layer in layers]
            (tmp_path / "results" / f"{kind}.yaml").write_text(yaml.safe_dump(
                {"model": "m", "selection": kind, "seed": None, "top_percent": 25, "modules": modules,
                 "unfrozen_parameters": ["^model\\."], "trainable_params": 1000, "total_params": 10_000}))
        out = report.build_report(tmp_path / "results", tmp_path / "report")
    comparisons = pd.read_csv(out / "comparisons.csv")
    pair = comparisons[comparisons.variant.isin(["spectrum-t25", "spectrum-frobenius-t25"])
                       & comparisons.reference.isin(["spectrum-t25", "spectrum-frobenius-t25"])]
    assert len(pair) == 1  # on the target task
    sign = 1 if pair.variant.iloc[0] == "spectrum-frobenius-t25" else -1
    summary = (out / "summary.md").read_text()
    row = next(line for line in summary.splitlines()
               if line.startswith("| spectrum-frobenius-t25 | spectrum-t25 | Frobenius² |"))  # the criteria table
    assert f"| {sign * pair.difference.iloc[0]:+.3g} [" in row
    sentence = next(line for line in summary.splitlines() if line.startswith("Selection criteria on snrtune_toolcall"))
    assert "spectrum-frobenius-t25" in sentence
    assert (out / "criteria_overlap_m_t25.png").is_file()
    assert "criteria_overlap_m_t25.png" in (out / "report.html").read_text()


def _renamed_task(path: Path, old: str, new: str, old_metric: str, new_metric: str) -> None:
    """An eval.json of the report fixture with one task renamed (its metric too): a task no table entry but ours
    knows, scored by a metric the fallback order would not pick first."""
    import json

    record = json.loads(path.read_text())
    record["results"][new] = {k.replace(old_metric, new_metric): v for k, v in record["results"].pop(old).items()}
    record["higher_is_better"][new] = {new_metric: True}
    del record["higher_is_better"][old]
    per_example = record["per_example"].pop(old)
    per_example["metrics"] = {new_metric: per_example["metrics"][old_metric]}
    record["per_example"][new] = per_example
    path.write_text(json.dumps(record))


def test_the_report_reads_the_new_method_and_task_by_their_entries(tmp_path, monkeypatch):
    """Rendered end to end (tables, plots, report.html): the new method gets its label and is compared, the new
    task is the target by its role and is ranked by its table metric (f1, though the eval also reports acc)."""
    import json

    import pandas as pd

    from report_fixture import Results, bernoulli
    from snrtune.report import report

    monkeypatch.setattr(tasks, "_TABLE", {**tasks._TABLE, MY_TASK.name: MY_TASK})
    results = Results(tmp_path / "results")
    with registered(LORA_WIDE):
        results.add("m", "base", bernoulli(0.05, 60, 1), seed=None)
        results.add("m", "full", bernoulli(0.6, 60, 2), seed=0)
        results.add("m", "lora-wide", bernoulli(0.95, 60, 3), seed=0)
        for eval_json in (tmp_path / "results").glob("x*/a.json"):
            _renamed_task(eval_json, "snrtune_toolcall", "my_qa", "acc", "f1")
            record = json.loads(eval_json.read_text())
            record["results"]["my_qa"]["acc"] = 0.0  # a decoy: ranking by acc (first in the fallback) ties all
            values = record["per_example"]["my_qa"]["metrics"]["f1"]["values"]
            record["per_example"]["my_qa"]["metrics"]["acc"] = {"aggregation": "mean", "values": [0.0] * len(values)}
            record["higher_is_better"]["my_qa"]["acc"] = True
            eval_json.write_text(json.dumps(record))
        out = report.build_report(tmp_path / "results", tmp_path / "report")
    scores = pd.read_csv(out / "scores.csv")
    target = scores[scores["task"] == "my_qa"]
    assert set(target["metric"]) == {"f1"}
    assert set(target["variant"]) >= {"base", "full", "lora-wide"}
    summary = (out / "summary.md").read_text()
    assert "my_qa" in summary and "lora-wide" in summary
    assert "lora-wide" in (out / "report.html").read_text()
