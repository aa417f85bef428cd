"""Placement on a cluster: training jobs on one node, GPUs per node, and the partition's ceilings on memory and
runtime that every request, first or retried, respects (snrtune.workflow.config, workflow/rules/)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from snrtune.errors import SnrtuneError
from snrtune.workflow.flags import scaled
from snrtune.workflow.plan import train_resources
from snrtune.workflow.preflight import check_placement
from snrtune.workflow.schema import load_schema, validate_config

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = load_schema(ROOT / "workflow/schemas/config.schema.yaml")


def config(resources=None, **model_resources):
    model = {"source": "org/m", "params_b": 8.03, "device": "cuda", "resources": model_resources}
    return validate_config({"models": {"m": model}, "methods": ["full", "qlora"],
                               "resources": resources or {}}, SCHEMA)


def test_retries_grow_up_to_the_ceiling():
    assert [scaled(1000, a, 1.5, 2000) for a in (1, 2, 3)] == [1000, 1500, 2000]
    assert [scaled(3000, a, 1.5, 2000) for a in (1, 2)] == [2000, 2000]
    assert [scaled(1000, a, 1.5, None) for a in (1, 2, 3)] == [1000, 1500, 2250]


@pytest.mark.parametrize("model_resources, key", [
    ({"train_gpus": 16}, "models.m.resources.train_gpus"),
    ({"per_method": {"full": {"gpus": 9}}}, "models.m.resources.per_method.full.gpus"),
])
def test_more_gpus_than_a_node_has_are_refused_in_one_line(model_resources, key):
    with pytest.raises(SnrtuneError) as error:
        check_placement(config({"gpus_per_node": 8}, **model_resources))
    message = str(error.value)
    assert "\n" not in message and key in message and "gpus_per_node 8" in message
    check_placement(config({"gpus_per_node": 16}, **model_resources))  # a 16-GPU node holds them


@pytest.mark.parametrize("model_resources, key", [
    ({"train_mem_mb": 600000}, "models.m.resources.train_mem_mb"),
    ({"mem_mb": 600000}, "models.m.resources.mem_mb"),
    ({"per_method": {"qlora": {"mem_mb": 600000}}}, "models.m.resources.per_method.qlora.mem_mb"),
])
def test_memory_above_the_ceiling_is_refused_in_one_line(model_resources, key):
    with pytest.raises(SnrtuneError) as error:
        check_placement(config({"max_mem_mb": 500000}, **model_resources))
    assert "\n" not in str(error.value) and key in str(error.value) and "max_mem_mb 500000" in str(error.value)


def test_the_estimate_is_held_to_the_ceilings(tmp_path):
    # Without data tokens the runtime is default_train_runtime (1440); the ceiling cuts it to the partition's.
    plan = train_resources(config({"max_runtime": 720}), "m", "qlora-s0", tmp_path)
    assert plan["runtime"] == 720
    free = train_resources(config(), "m", "full-s0", tmp_path)
    assert free["runtime"] == 1440
    with pytest.raises(SnrtuneError, match=r"training full-s0 needs \d+ MB .*max_mem_mb 10000"):
        train_resources(config({"max_mem_mb": 10000}), "m", "full-s0", tmp_path)
    # an override below the ceiling is what the job asks for
    assert train_resources(config({"max_mem_mb": 10000}, train_mem_mb=9000), "m", "full-s0", tmp_path)["mem_mb"] == 9000


def test_dry_run_requests_respect_the_ceilings_and_keep_training_on_one_node(tmp_path):
    """snakemake -n prints each job's resources: train asks for nodes=1, and the runtime is the ceiling."""
    cfg = {"models": {"m": {"source": "org/m", "params_b": 8.03, "device": "cuda",
                            "resources": {"runtime": 90}}},
           "methods": ["full"],
           "resources": {"max_runtime": 60, "max_mem_mb": 2000000}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    out = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-s", str(ROOT / "workflow" / "Snakefile"), "--configfile",
                          str(path), "-d", str(tmp_path), "--cores", "1", "results/m/runs/full-s0"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    job = out.stdout[out.stdout.index("rule train:"):]
    resources = job[job.index("resources:"):].splitlines()[0]
    assert "nodes=1" in resources and "runtime=60" in resources and "gpu=8" in resources, resources  # 8B full: 8 GPUs (test_resources)


def test_a_config_over_the_node_stops_before_any_job(tmp_path):
    cfg = {"models": {"m": {"source": "org/m", "params_b": 8.03, "device": "cuda", "resources": {"train_gpus": 8}}},
           "methods": ["full"], "resources": {"gpus_per_node": 4}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    out = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-s", str(ROOT / "workflow" / "Snakefile"), "--configfile",
                          str(path), "-d", str(tmp_path), "--cores", "1"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert out.returncode != 0
    assert "config key 'models.m.resources.train_gpus': 8 GPUs, more than resources.gpus_per_node 4" in out.stdout + out.stderr
