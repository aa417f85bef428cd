"""Real DeepSpeed ZeRO-2 / ZeRO-3 through the workflow's own launch, on two CPU processes:
`torchrun --standalone --nproc_per_node 2 -m snrtune.cli train … --deepspeed config/zero{2,3}.json`.

Each run must record the right parameter counts (ZeRO-3's partitioned loading leaves every parameter's own
data empty; the count is DeepSpeed's ``ds_numel``), save complete outputs (the whole model for full
fine-tuning, exactly the selected tensors for Spectrum), merge, and end with the weights of one process
training without DeepSpeed from the same training file (each optimizer step is the whole dataset, which the
two processes split: the same steps). DeepSpeed is installed by scripts/install.sh (the `deepspeed` extra):
no skip, a missing DeepSpeed fails here.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import deepspeed  # noqa: F401  (installed by scripts/install.sh; fails rather than skips without it)
import pytest
import torch
import yaml
from safetensors.torch import load_file
from train_data import SELECTED_MODULES, SELECTED_PARAMS, write_alpaca, write_config, write_selection

from snrtune.cli import main
from snrtune.training.train import train
from snrtune.workflow.plan import train_command, train_resources
from snrtune.workflow.preflight import preflight
from snrtune.workflow.schema import load_schema, validate_config
from snrtune.workflow import resources as r

CONFIG_DIR = Path(__file__).parents[2] / "config"
# the tiny Llama (tests/tiny.py): tied embedding 320·64; per layer q 64·64, k 64·32, v 64·32, o 64·64,
# gate 64·128, up 64·128, down 128·64 and two norms of 64; 4 layers; the final norm 64
TOTAL_PARAMS = 320 * 64 + 4 * (4096 + 2048 + 2048 + 4096 + 3 * 8192 + 2 * 64) + 64
ROWS = 8  # write_alpaca(copies=2); every optimizer step takes all 8 rows (2 processes: 4 each, settings.per_process)
STEPS = 2


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("deepspeed-inputs")
    return {"data": write_alpaca(d / "data.jsonl", copies=2),
            "config": write_config(d / "train.yaml", per_device_train_batch_size=ROWS, max_steps=STEPS,
                                   save_steps=100, val_fraction=0.0),
            "selection": write_selection(d / "sel.yaml")}


@pytest.fixture(scope="module")
def reference(tiny_llama, inputs, tmp_path_factory):
    """One process without DeepSpeed, the same training file (the whole dataset per step): the trained weights
    of spectrum and full."""
    out = tmp_path_factory.mktemp("deepspeed-reference")
    weights = {}
    for method in ("spectrum", "full"):
        selection = inputs["selection"] if method == "spectrum" else None
        _, model = train(tiny_llama, method, inputs["data"], out / method, selection=selection,
                         config=inputs["config"])
        weights[method] = {name: p.detach().clone() for name, p in model.named_parameters()}
    return weights


def torchrun_train(model_dir, method, inputs, zero_json, out):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    selection = ["--selection", str(inputs["selection"])] if method == "spectrum" else []
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "snrtune.cli", "train", str(model_dir), "--method", method, "--data", str(inputs["data"]),
           *selection, "--config", str(inputs["config"]), "--out", str(out),
           "--deepspeed", str(CONFIG_DIR / zero_json)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("zero_json", ["zero3.json", "zero2.json"])
@pytest.mark.parametrize("method", ["spectrum", "full"])
def test_zero_on_two_cpu_processes_trains_saves_and_merges_what_one_process_does(
        tiny_llama, inputs, reference, zero_json, method, tmp_path):
    run = tmp_path / "run"
    result = torchrun_train(tiny_llama, method, inputs, zero_json, run)
    assert result.returncode == 0, result.stderr[-4000:]
    metrics = json.loads((run / "metrics.json").read_text())
    trainable = SELECTED_PARAMS if method == "spectrum" else TOTAL_PARAMS
    assert (metrics["trainable_params"], metrics["total_params"]) == (trainable, TOTAL_PARAMS)
    assert metrics["details"]["optimizer_params"] == trainable  # what the ZeRO optimizer held
    assert metrics["details"]["distributed_type"] == "DEEPSPEED"
    assert (metrics["setup"]["world_size"], metrics["details"]["global_step"]) == (2, STEPS)
    assert f"{trainable:,} of {TOTAL_PARAMS:,} parameters" in result.stdout

    base = load_file(str(tiny_llama / "model.safetensors"))
    expected = reference[method]
    if method == "spectrum":
        saved = load_file(str(run / "spectrum_delta.safetensors"))
        assert sorted(saved) == sorted(f"{m}.weight" for m in SELECTED_MODULES)
    else:
        saved = load_file(str(run / "model.safetensors"))
        assert set(base) <= set(saved)  # the whole model, gathered from the partitions
        # ZeRO-2's save also writes the tied output head: the embedding matrix again, nothing else
        assert set(saved) - set(base) <= {"lm_head.weight"}
        if "lm_head.weight" in saved:
            assert torch.equal(saved.pop("lm_head.weight"), saved["model.embed_tokens.weight"])
    for name, tensor in saved.items():
        assert tensor.shape == base[name].shape and not torch.equal(tensor, base[name]), name
        # Adam moves an element by about the learning rate (1e-2) a step: 1e-4 is a hundredth of one step's move,
        # room for the two processes' other summation order (ZeRO-3 once differed by 1.5e-5 in one element of
        # 8192), none for a step, a partition or a gradient lost
        torch.testing.assert_close(tensor, expected[name], rtol=1e-4, atol=1e-4)

    assert main(["merge", str(run), "--base", str(tiny_llama), "--out", str(tmp_path / "merged")]) == 0
    merged = load_file(str(tmp_path / "merged" / "model.safetensors"))
    if method == "full":  # copied as saved
        merged.pop("lm_head.weight", None)
    assert sorted(merged) == sorted(base)
    for name, tensor in merged.items():
        assert torch.equal(tensor, saved.get(name, base[name])), name


# ---------------------------------------------------------------- memory from DeepSpeed's estimators

def estimator_table(capsys, estimator, *args, **kwargs) -> dict[str, tuple[float, float]]:
    """What DeepSpeed's ``estimate_zero*_model_states_mem_needs_all_cold`` prints: options -> (per CPU, per GPU)
    in its "GB" (2**30 bytes), two decimals."""
    capsys.readouterr()
    estimator(*args, **kwargs)
    rows = re.findall(r"^\s*([\d.]+)GB \|\s*([\d.]+)GB \| (.+)$", capsys.readouterr().out, re.M)
    return {options.replace("OffloadDeviceEnum.", "").replace(" ", ""): (float(cpu), float(gpu))
            for cpu, gpu, options in rows}


PAPER_MODELS = {"paper.yaml": "Meta-Llama-3-8B", "paper-70b.yaml": "Meta-Llama-3-70B"}


def paper_plan(name: str, run: str, tmp_path):
    """The training plan of config/NAME's model for RUN (before the model is fetched: its params_b)."""
    config = validate_config(yaml.safe_load((CONFIG_DIR / name).read_text()),
                                load_schema(CONFIG_DIR.parent / "workflow/schemas/config.schema.yaml"))
    model = PAPER_MODELS[name]
    size = r.size_from_count(config["models"][model]["params_b"])
    return config, model, size, train_resources(config, model, run, tmp_path)


def test_70b_full_fine_tuning_host_memory_is_deepspeeds_estimate(capsys, tmp_path):
    """config/paper-70b.yaml, full fine-tuning: ZeRO-3 with the optimizer offloaded (config/zero3_offload.json:
    parameters stay on the GPUs, partitioned loading). DeepSpeed's table says 1578.03 "GB" (GiB) of host
    memory, 24 bytes per parameter (16 × its buffer factor 1.5): 24 · 70.6e9 / 2**30 = 1578.03. The job asks
    for that plus 8 GB for data and libraries, rounded up to whole GB."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs_all_cold

    _, _, size, plan = paper_plan("paper-70b.yaml", "full-s0", tmp_path)
    assert plan["strategy"] == "zero3_offload"
    table = estimator_table(capsys, estimate_zero3_model_states_mem_needs_all_cold, size.total, size.largest,
                            num_gpus_per_node=plan["gpus"])
    host_gib, gpu_gib = table["offload_param=none,offload_optimizer=cpu,zero_init=1"]
    assert host_gib == pytest.approx(24 * 70.6e9 / 2**30, abs=0.01) == pytest.approx(1578.03, abs=0.01)
    assert plan["mem_mb"] == math.ceil((host_gib * 2**30 + 8e9) / 1e9) * 1000 == 1703000
    gpu, host = r.zero_model_states(size, size.total, plan["gpus"], "zero3_offload")
    assert (host / 2**30, gpu / 2**30) == (pytest.approx(host_gib, abs=0.005), pytest.approx(gpu_gib, abs=0.005))


@pytest.mark.parametrize("name, run", [("paper.yaml", "full-s0"), ("paper.yaml", "spectrum-t50-s0"),
                                       ("paper-70b.yaml", "spectrum-t25-s0")])
def test_zero3_gpu_memory_of_the_paper_configs_is_deepspeeds_estimate(capsys, tmp_path, name, run):
    """Per GPU under ZeRO-3 without offload: DeepSpeed's model states for the trainable parameters (its table
    for that count), each frozen parameter's 16-bit weight partitioned over the GPUs, then the activations
    and overheads of docs/resources.md."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs_all_cold

    config, model, size, plan = paper_plan(name, run, tmp_path)
    assert plan["strategy"] == "zero3" and plan["gpus"] > 1
    settings = r.TrainingJob(method=run.split("-")[0], top_percent=float(run.split("-t")[1].split("-")[0])
                          if "-t" in run else None, **run_settings_of(config, model))
    trainable = r.trainable_params(size, settings)
    table = estimator_table(capsys, estimate_zero3_model_states_mem_needs_all_cold, trainable, size.largest,
                            num_gpus_per_node=plan["gpus"])
    _, gpu_gib = table["offload_param=none,offload_optimizer=none,zero_init=1"]
    states = gpu_gib * 2**30 + 2 * (size.total - trainable) / plan["gpus"]
    expected = 1.1 * (states + r.activation_bytes(size, settings)) + 1.5 * 2**30
    assert r.per_device_bytes(size, settings, trainable, plan["gpus"], "zero3") == pytest.approx(expected, abs=2e7)


def run_settings_of(config, model) -> dict:
    cfg = train_command(config, model, "full-s0").settings()
    return {"seq_len": cfg.max_seq_length, "micro_batch": cfg.per_device_train_batch_size,
            "grad_accum": cfg.gradient_accumulation_steps, "gradient_checkpointing": cfg.gradient_checkpointing}


def test_zero2_model_states_are_deepspeeds_estimate(capsys):
    """ZeRO-2 (config/zero2.json) on 4 GPUs for an 8B model: every GPU keeps the 16-bit weights, gradients and
    optimizer state are partitioned: DeepSpeed's 2·P + 18·P/4 for full fine-tuning; host: its 4 bytes per
    parameter and process × 1.5, or the 16-bit loading copies (1.2 × 2 bytes × 4 processes) if larger."""
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs_all_cold

    size = r.size_from_count(8.03)
    table = estimator_table(capsys, estimate_zero2_model_states_mem_needs_all_cold, size.total, num_gpus_per_node=4)
    host_gib, gpu_gib = table["offload_optimizer=none"]
    gpu, host = r.zero_model_states(size, size.total, 4, "zero2")
    assert (host / 2**30, gpu / 2**30) == (pytest.approx(host_gib, abs=0.005), pytest.approx(gpu_gib, abs=0.005))
    settings = r.TrainingJob("full", seq_len=2048, micro_batch=1, gradient_checkpointing=True)
    assert r.host_mem_mb(size, settings, size.total, 4, "zero2") == math.ceil((host + 8e9) / 1e9) * 1000


def test_without_deepspeed_the_formula_is_the_fallback(monkeypatch):
    """Where DeepSpeed is not importable the estimate is docs/resources.md's formula: ZeRO-3 with offload keeps
    the 16-bit weights and gradients on the GPUs ((2·P + 2·T)/n) and 12 bytes per trainable parameter on the host."""
    monkeypatch.setattr(r, "deepspeed_estimators", lambda: None)
    size = r.size_from_count(70.6)
    settings = r.TrainingJob("full", seq_len=2048, micro_batch=1, gradient_checkpointing=True)
    assert r.zero_model_states(size, size.total, 8, "zero3_offload") is None
    per_gpu = 1.1 * (4 * size.total / 8 + r.activation_bytes(size, settings)) + 1.5 * 2**30
    assert r.per_device_bytes(size, settings, size.total, 8, "zero3_offload") == pytest.approx(per_gpu)
    assert r.host_mem_mb(size, settings, size.total, 8, "zero3_offload") == math.ceil(
        (2 * size.total * 1.2 + 12 * size.total + 8e9) / 1e9) * 1000


# ---------------------------------------------------------------- DeepSpeed missing: one line, before anything loads

def test_train_asking_for_deepspeed_without_it_is_one_line_before_the_model_loads(
        tiny_llama, inputs, tmp_path, monkeypatch, capsys):
    from snrtune.training import methods, settings

    monkeypatch.setattr(settings, "deepspeed_installed", lambda: False)
    monkeypatch.setattr(methods, "prepare", lambda *a, **k: pytest.fail("the model was loaded"))
    code = main(["train", str(tiny_llama), "--method", "full", "--data", str(inputs["data"]), "--config",
                 str(inputs["config"]), "--out", str(tmp_path / "run"), "--deepspeed", "config/zero3.json"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == ("snrtune train: error: --deepspeed: key 'deepspeed' (config/zero3.json) asks for "
                                 "DeepSpeed, which is not installed; expected `pip install 'snrtune[deepspeed]'` "
                                 "or deepspeed: null")
    assert not (tmp_path / "run").exists()


def test_preflight_names_the_run_planned_under_zero_when_deepspeed_is_missing(monkeypatch, tmp_path):
    """config/paper.yaml plans 8B Spectrum-50 on 2 GPUs and full fine-tuning on 4 with ZeRO-3: without
    DeepSpeed the workflow stops before any job (the rules call preflight while parsing), at the first."""
    from snrtune.errors import SnrtuneError
    from snrtune.training import settings

    config, *_ = paper_plan("paper.yaml", "full-s0", tmp_path)
    preflight(config, packages_here=True)  # installed: nothing to say
    monkeypatch.setattr(settings, "deepspeed_installed", lambda: False)
    monkeypatch.setattr(r, "deepspeed_estimators", lambda: None)
    preflight(config, packages_here=False)  # under --sdm conda the jobs' environment brings it
    with pytest.raises(SnrtuneError) as error:
        preflight(config, packages_here=True)
    assert str(error.value) == (
        "training run Meta-Llama-3-8B/spectrum-t50-s0 is planned on 2 GPUs with zero3 (--deepspeed "
        "config/zero3.json), but DeepSpeed is not installed; expected `pip install 'snrtune[deepspeed]'`, "
        "or models.Meta-Llama-3-8B.resources.train_gpus: 1")
