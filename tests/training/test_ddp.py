"""The same `snrtune train` command under torchrun trains with DDP: two CPU processes, gloo backend, with the
examples per optimizer step and the steps of one process (the accumulation divided between them). FSDP through
`snrtune train` there is an error (accelerate shards only on GPUs), so the FSDP2 sharding that config/fsdp.yaml
asks for is checked on the same two CPU processes with torch's fully_shard directly (tests/fsdp_worker.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from pathlib import Path

import pytest
from train_data import SELECTED_MODULES, SELECTED_PARAMS, write_alpaca, write_config, write_selection

FSDP_YAML = Path(__file__).parents[2] / "config" / "fsdp.yaml"


def torchrun_spectrum(model_dir, data, config, selection, out, timeout, processes=2):
    """`snrtune train --method spectrum` under torchrun: 2 CPU processes (or ``processes``), one thread each."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
           "-m", "snrtune.cli", "train", str(model_dir), "--method", "spectrum", "--data", str(data),
           "--selection", str(selection), "--config", str(config), "--out", str(out)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_one_and_two_processes_train_the_same_budget(tiny_llama, tmp_path):
    """One training file (2 × 2 = 4 examples per optimizer step, one epoch of 12 rows), run by one process and by
    two under torchrun (DDP, gloo): each process of two accumulates 1 instead of 2, so both runs take 4 examples
    per step and 3 steps, and metrics.json says so."""
    data = write_alpaca(tmp_path / "data.jsonl", copies=3)  # 12 rows
    config = write_config(tmp_path / "train.yaml", max_steps=None, num_epochs=1, per_device_train_batch_size=2,
                          gradient_accumulation_steps=2, val_fraction=0.0, ddp_backend="gloo", save_steps=100)
    selection = write_selection(tmp_path / "sel.yaml")
    single = torchrun_spectrum(tiny_llama, data, config, selection, tmp_path / "one", timeout=240, processes=1)
    assert single.returncode == 0, single.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    out = tmp_path / "run"
    result = torchrun_spectrum(tiny_llama, data, config, selection, out, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    two = json.loads((out / "metrics.json").read_text())
    assert one["budget"] == {"examples_per_step": 4, "world_size": 1, "per_device_train_batch_size": 2,
                             "gradient_accumulation_steps": 2, "max_steps": 3}
    assert two["budget"] == {"examples_per_step": 4, "world_size": 2, "per_device_train_batch_size": 2,
                             "gradient_accumulation_steps": 1, "max_steps": 3}
    assert one["details"]["global_step"] == two["details"]["global_step"] == 3
    assert two["setup"]["world_size"] == 2 and two["details"]["distributed_type"] == "MULTI_CPU"
    assert two["trainable_params"] == one["trainable_params"] == SELECTED_PARAMS
    assert sorted(p.name for p in out.iterdir()) == [
        "chat_template.jinja", "metrics.json", "selection.yaml", "snrtune_output.json", "snrtune_run.json",
        "spectrum_delta.safetensors", "tokenizer.json", "tokenizer_config.json"]


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


FSDP_WORKER = Path(__file__).parents[1] / "fsdp_worker.py"


def reference_steps(model_dir, selection, steps):
    """The single-process run the FSDP ranks must reproduce: the whole batch per step, the same AdamW."""
    import fsdp_worker

    model = fsdp_worker.spectrum_model(str(model_dir), str(selection))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = fsdp_worker.adamw(model)
    losses = []
    for batch in fsdp_worker.batches(steps, model.config.vocab_size):
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses, before, {name: p.detach() for name, p in model.named_parameters()}


@pytest.mark.slow
def test_fsdp2_shards_a_spectrum_model_on_two_cpu_processes_and_matches_one_process(tiny_llama, tmp_path):
    """What config/fsdp.yaml asks for (FSDP2, one unit per decoder layer, full shard), applied with torch's
    fully_shard on 2 gloo processes to a Spectrum-prepared model (frozen and trainable tensors in the same
    units): every parameter is split between the ranks, the loss and the trained weights equal one process
    training on the whole batch, and the frozen weights do not move."""
    from safetensors.torch import load_file
    import torch

    steps = 3
    selection = write_selection(tmp_path / "sel.yaml")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join([str(FSDP_WORKER.parent), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(FSDP_WORKER),
           str(tiny_llama), str(selection), str(FSDP_YAML), str(steps), str(tmp_path / "fsdp")]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads((tmp_path / "fsdp" / "result.json").read_text())
    for name, total in got["total"].items():
        sizes = [rank[name] for rank in got["local"]]
        assert sum(sizes) == total and max(sizes) <= (total + 1) // 2 + total // 32, (name, sizes, total)
    assert got["trainable"] == sorted(f"{module}.weight" for module in SELECTED_MODULES)

    losses, before, after = reference_steps(tiny_llama, selection, steps)
    assert got["losses"] == pytest.approx(losses, rel=1e-5)
    sharded = load_file(str(tmp_path / "fsdp" / "params.safetensors"))
    assert sorted(sharded) == sorted(after)
    for name, tensor in sharded.items():
        if name in got["trainable"]:
            assert not torch.equal(tensor, before[name]), name
            torch.testing.assert_close(tensor, after[name], rtol=1e-4, atol=1e-5)
        else:
            assert torch.equal(tensor, before[name]), name
