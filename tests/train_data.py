"""Inputs the training tests write by hand: a memorisable dataset, a short config, a sel.yaml.

The tiny Llama (tests/tiny.py) has hidden 64, intermediate 128, 4 layers, 4 heads of 16 with 2 kv heads
(k/v project 64 → 32), vocab 320, tied embeddings. The counts below are worked out from those sizes.
"""

from __future__ import annotations

import json

import yaml

CAPITALS = [("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Norway", "Oslo")]

# model.layers.1.self_attn.q_proj: 64·64 = 4096; model.layers.2.mlp.down_proj: 128·64 = 8192
SELECTED_MODULES = ["model.layers.1.self_attn.q_proj", "model.layers.2.mlp.down_proj"]
SELECTED_PARAMS = 64 * 64 + 128 * 64


def write_alpaca(path, copies: int = 4):
    rows = [{"instruction": f"What is the capital of {c}?", "input": "", "output": f"The capital of {c} is {p}."}
            for c, p in CAPITALS] * copies
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_preferences(path, copies: int = 3):
    rows = [{"prompt": f"What is the capital of {c}?", "chosen": f"The capital of {c} is {p}.",
             "rejected": f"The capital of {c} is Oslo."} for c, p in CAPITALS[:3]] * copies
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_config(path, **overrides):
    cfg = {"learning_rate": 1e-2, "lr_scheduler_type": "constant", "warmup_steps": 0,
           "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1, "max_steps": 6,
           "save_steps": 3, "val_fraction": 0.125, "logging_steps": 1, "lora_dropout": 0.0, **overrides}
    path.write_text(yaml.safe_dump(cfg))
    return path


def write_selection(path, modules=SELECTED_MODULES, trainable=SELECTED_PARAMS, extra_patterns=()):
    """A sel.yaml as `snrtune select` writes it (docs/artifacts.md), for the given modules."""
    patterns = ["^" + m.replace(".", r"\.") + r"\." for m in modules] + list(extra_patterns)
    sel = {"snrtune_version": "test", "model": "tiny-llama", "snr_file": None, "top_percent": 25,
           "budget_params": None, "types": sorted({m.split(".", 3)[3] for m in modules}),
           "modules": [{"name": m} for m in modules], "unfrozen_parameters": patterns,
           "trainable_params": trainable, "total_params": None, "trainable_fraction": None, "notes": [],
           "exports": {"peft": {"target_modules": list(modules)}}}
    path.write_text(yaml.safe_dump(sel, sort_keys=False))
    return path
