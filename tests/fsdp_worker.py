"""One rank of the FSDP2 CPU check (tests/training/test_ddp.py): shard a Spectrum-prepared model the way config/fsdp.yaml
asks, train a few AdamW steps on this rank's half of a fixed batch, and write what the test compares.

    torchrun --nproc_per_node 2 tests/fsdp_worker.py MODEL_DIR SEL_YAML FSDP_YAML STEPS OUT_DIR

accelerate (1.15) applies FSDP only on GPU-type devices, so on CPU processes this script applies the same
sharding itself with torch's ``fully_shard`` (FSDP2): one unit per decoder layer class in the model's
``_no_split_modules`` (TRANSFORMER_BASED_WRAP), then the root, ``reshard_after_forward`` as the YAML says.
Rank 0 writes ``result.json`` (loss per step, each rank's local shard sizes) and ``params.safetensors`` (the full
parameters after the steps, gathered from the shards).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import yaml
from safetensors.torch import save_file
from torch.distributed.fsdp import fully_shard

from snrtune.training import methods
from snrtune.training import train
from snrtune.training.settings import load_settings

STEP_ROWS, SEQ = 4, 12  # the whole batch per step; each rank takes half of its rows


def batches(steps: int, vocab: int) -> torch.Tensor:
    """The same fixed token batches on every rank (and in the test's single-process reference)."""
    generator = torch.Generator().manual_seed(0)
    return torch.randint(3, vocab, (steps, STEP_ROWS, SEQ), generator=generator)


def spectrum_model(model_dir: str, selection_path: str):
    """The model `snrtune train --method spectrum` prepares, the same on every rank and in the test's
    single-process reference."""
    torch.manual_seed(0)
    cfg = load_settings(None, learning_rate=1e-2)
    model, _ = methods.prepare("spectrum", model_dir, cfg, train.load_selection(selection_path))
    return model


def adamw(model):
    """AdamW over the trainable tensors (lr 1e-2, no weight decay), for the ranks and the reference alike."""
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)


def shard(model, fsdp: dict) -> None:
    if fsdp.get("version") != 2 or fsdp.get("auto_wrap_policy") != "TRANSFORMER_BASED_WRAP":
        raise SystemExit(f"this check applies FSDP2 per decoder layer; the YAML says {fsdp}")
    layer_classes = set(model._no_split_modules)
    reshard = bool(fsdp.get("reshard_after_forward", True))
    for module in model.modules():
        if type(module).__name__ in layer_classes:
            fully_shard(module, reshard_after_forward=reshard)
    fully_shard(model, reshard_after_forward=reshard)


def main(model_dir: str, selection_path: str, fsdp_path: str, steps: int, out: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model = spectrum_model(model_dir, selection_path)
    total = {name: p.numel() for name, p in model.named_parameters()}
    shard(model, yaml.safe_load(Path(fsdp_path).read_text()))
    local = {name: p.to_local().numel() for name, p in model.named_parameters()}
    optimizer = adamw(model)  # after sharding: it steps the DTensor shards
    losses = []
    rows = STEP_ROWS // world
    for batch in batches(steps, model.config.vocab_size):
        mine = batch[rank * rows:(rank + 1) * rows]
        loss = model(input_ids=mine, labels=mine).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        losses.append(mean.item() / world)
    full = {name: p.full_tensor().detach().contiguous() for name, p in model.named_parameters()}
    shards = [None] * world
    dist.all_gather_object(shards, local)
    if rank == 0:
        Path(out).mkdir(parents=True, exist_ok=True)
        save_file(full, str(Path(out) / "params.safetensors"))
        (Path(out) / "result.json").write_text(json.dumps({
            "losses": losses, "total": total, "local": shards,
            "trainable": sorted(name for name, p in model.named_parameters() if p.requires_grad)}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
