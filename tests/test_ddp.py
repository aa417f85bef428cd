"""The same `snrtune train` command under torchrun trains with DDP: two CPU processes, gloo backend (and FSDP
there is an error: accelerate shards only on GPUs)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from pathlib import Path

import pytest
from train_data import SELECTED_PARAMS, write_alpaca, write_config, write_selection

FSDP_YAML = Path(__file__).parents[1] / "config" / "fsdp.yaml"


def torchrun_spectrum(model_dir, data, config, selection, out, timeout):
    """`snrtune train --method spectrum` under torchrun: 2 CPU processes, one thread each."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "snrtune.cli", "train", str(model_dir), "--method", "spectrum", "--data", str(data),
           "--selection", str(selection), "--config", str(config), "--out", str(out)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_torchrun_two_processes_split_the_data(tiny_llama, tmp_path):
    data = write_alpaca(tmp_path / "data.jsonl", copies=3)  # 12 rows
    config = write_config(tmp_path / "train.yaml", max_steps=None, num_epochs=1, per_device_train_batch_size=2,
                          val_fraction=0.0, ddp_backend="gloo", save_steps=100)
    selection = write_selection(tmp_path / "sel.yaml")
    out = tmp_path / "run"
    result = torchrun_spectrum(tiny_llama, data, config, selection, out, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["setup"]["world_size"] == 2
    # 12 rows, 2 per process per step, 2 processes: 3 optimizer steps (one process would take 6)
    assert metrics["details"]["global_step"] == 3
    assert metrics["trainable_params"] == SELECTED_PARAMS
    assert sorted(p.name for p in out.iterdir()) == [
        "chat_template.jinja", "metrics.json", "selection.yaml", "snrtune_run.json", "spectrum_delta.safetensors",
        "tokenizer.json", "tokenizer_config.json"]


@pytest.mark.slow
def test_fsdp_on_cpu_processes_is_a_clear_error_not_a_silent_ddp_run(tiny_llama, tmp_path):
    """accelerate 1.15 enables FSDP only on GPU-type devices: two CPU processes with config/fsdp.yaml would
    train as plain DDP (MULTI_CPU). `snrtune train` stops with one line instead, and leaves no run behind."""
    data = write_alpaca(tmp_path / "data.jsonl", copies=2)
    config = write_config(tmp_path / "train.yaml", max_steps=2, per_device_train_batch_size=2, val_fraction=0.0,
                          ddp_backend="gloo", save_steps=100, fsdp=True, fsdp_config=str(FSDP_YAML))
    selection = write_selection(tmp_path / "sel.yaml")
    out = tmp_path / "run"
    result = torchrun_spectrum(tiny_llama, data, config, selection, out, timeout=300)
    assert result.returncode != 0
    assert re.search(r"snrtune train: error: training config sets fsdp but accelerate \S+ runs this job as "
                     r"MULTI_CPU, without fsdp", result.stderr), result.stderr[-3000:]
    assert not out.exists()
