"""snrtune.workflow.resources: the training estimate against hand computations, and the workflow's overrides."""

from pathlib import Path

import pytest

from snrtune.workflow import resources as r
from snrtune.workflow.flags import sharding_flags
from snrtune.workflow.plan import train_resources
from snrtune.workflow.schema import load_schema, validate_config

GIB = 1024 ** 3


def test_size_from_a_parameter_table():
    table = {"parameters": {
        "model.embed_tokens.weight": [100, 8],
        "model.layers.0.self_attn.q_proj.weight": [8, 8], "model.layers.0.mlp.up_proj.weight": [16, 8],
        "model.layers.1.self_attn.q_proj.weight": [8, 8], "model.layers.1.mlp.up_proj.weight": [16, 8],
        "model.layers.1.input_layernorm.weight": [8], "model.norm.weight": [8]}}
    size = r.size_from_table(table)
    # total 800 + 2·(64 + 128) + 8 + 8; layer matrices 2·(64 + 128); LoRA per rank 2·((8+8) + (16+8));
    # the largest tensor is the embedding, 100 · 8
    assert size == r.ModelSize(total=1200, linear=384, lora_per_rank=80, hidden=8, layers=2, vocab=100, largest=800)


def test_size_from_a_parameter_count_has_llama_shapes():
    size = r.size_from_count(8.03)
    # d = (8.03e9 / 0.13)^(1/3) = 3953 -> 3968 (a multiple of 128); L = 8.03e9 / (13 · 3968²) = 39
    assert (size.hidden, size.layers, size.total) == (3968, 39, 8_030_000_000)
    assert size.lora_per_rank == 20 * 3968 * 39 and size.linear == int(0.9 * 8.03e9)
    assert size.largest == 32000 * 3968  # the embedding


def test_published_bytes_per_parameter():
    size = r.ModelSize(total=10**9, linear=8 * 10**8, lora_per_rank=10**6, hidden=1000, layers=10, vocab=32000,
                       largest=32000 * 1000)
    full = r.TrainingJob("full")
    # mixed-precision AdamW full fine-tuning: 16 bytes per parameter (bf16 weight + grad, fp32 master + 2 moments)
    assert r.model_state_bytes(size, full, r.trainable_params(size, full)) == 16 * 10**9
    lora = r.TrainingJob("lora", lora_r=8)
    # LoRA: 2 bytes per frozen bf16 weight + 16 per fp32 adapter parameter (8 · 1e6 of them)
    assert r.model_state_bytes(size, lora, r.trainable_params(size, lora)) == 2 * 10**9 + 16 * 8 * 10**6
    qlora = r.TrainingJob("qlora", lora_r=8)
    assert r.model_state_bytes(size, qlora, 8 * 10**6) == pytest.approx(0.55 * 10**9 + 16 * 8 * 10**6)
    spectrum = r.TrainingJob("spectrum", top_percent=25)
    assert r.trainable_params(size, spectrum) == 2 * 10**8  # 25 % of the layer matrices
    assert r.model_state_bytes(size, spectrum, 2 * 10**8) == 2 * 10**9 + 14 * 2 * 10**8


def test_full_fine_tuning_estimate_by_hand(monkeypatch):
    monkeypatch.setattr(r, "deepspeed_estimators", lambda: None)  # the formula (DeepSpeed's: tests/training/test_deepspeed.py)
    size = r.ModelSize(total=10**9, linear=8 * 10**8, lora_per_rank=10**6, hidden=1000, layers=10, vocab=32000,
                       largest=32000 * 1000)
    s = r.TrainingJob("full", seq_len=1000, micro_batch=1, max_steps=100)
    hw = r.Hardware(gpu_mem_gb=80, gpu_tflops=100, mfu=0.5)
    # activations 1000 tokens · 1000 · 34 · 10 layers = 340e6; logits 2 · 1000 · 32000 · 4 = 256e6
    per_gpu = 1.1 * (16e9 + 340e6 + 256e6) + 1.5 * GIB
    assert r.per_device_bytes(size, s, 10**9, 1, "none") == pytest.approx(per_gpu)
    one = r.estimate(size, s, hw)
    assert (one.gpus, one.strategy, one.gpu_mem_gb) == (1, "none", round(per_gpu / 1e9, 1))
    # on 16 GB GPUs (14.4 GB usable) it needs ZeRO-3 over 2: 1.1 · (8e9 + 596e6) + 1.5 GiB = 11.07 GB
    two = r.estimate(size, s, r.Hardware(gpu_mem_gb=16, gpu_tflops=100, mfu=0.5))
    assert (two.gpus, two.strategy, two.gpu_mem_gb) == (2, "zero3", 11.1)
    # host: one 16-bit copy ×1.2 + 8 GB = 10.4 GB -> 11000 MB (whole GB up)
    assert two.mem_mb == 11000
    # runtime: 100 steps · 1 example · 1000 tokens = 1e5 tokens (the GPUs share each step's examples) at 6e9
    # FLOPs each / (2 · 100e12 · 0.5) = 6 s
    # -> ceil(1.25 · 12 / 60) = 1 minute + 20
    assert two.runtime_min == 21


def test_gradient_checkpointing_keeps_one_input_per_layer():
    size = r.ModelSize(total=10**9, linear=8 * 10**8, lora_per_rank=10**6, hidden=1000, layers=10, vocab=32000,
                       largest=32000 * 1000)
    s = r.TrainingJob("lora", seq_len=1000, micro_batch=2, gradient_checkpointing=True)
    # 2000 tokens · 1000 · (2 · 10 layers + 34 for the layer being recomputed) + logits 2 · 2000 · 32000 · 4
    assert r.activation_bytes(size, s) == 2000 * 1000 * (2 * 10 + 34) + 2 * 2000 * 32000 * 4


def test_70b_full_fine_tuning_needs_a_node_with_offload_and_qlora_one_gpu(monkeypatch):
    monkeypatch.setattr(r, "deepspeed_estimators", lambda: None)  # the formula (DeepSpeed's: tests/training/test_deepspeed.py)
    size = r.size_from_count(70.6)
    full = r.estimate(size, r.TrainingJob("full", seq_len=4096, micro_batch=1, gradient_checkpointing=True))
    assert (full.gpus, full.strategy) == (8, "zero3_offload") and not any("does not fit" in n for n in full.notes)
    # the fp32 master copy and both moments (12 bytes per parameter) live on the host
    assert full.mem_mb >= 12 * 70.6e9 / 1e6
    qlora = r.estimate(size, r.TrainingJob("qlora", lora_r=32, seq_len=4096, micro_batch=1, gradient_checkpointing=True))
    assert (qlora.gpus, qlora.strategy) == (1, "none") and qlora.gpu_mem_gb < 80 * 0.9


def test_cpu_runs_ask_for_no_gpu():
    size = r.ModelSize(total=10**8, linear=8 * 10**7, lora_per_rank=10**5, hidden=500, layers=10, vocab=1000, largest=500 * 1000)
    est = r.estimate(size, r.TrainingJob("full", device="cpu", seq_len=100, micro_batch=1))
    assert est.gpus == 0 and est.gpu_mem_gb is None and est.runtime_min is None
    assert est.mem_mb == int(-(-(r.per_device_bytes(size, r.TrainingJob("full", device="cpu", seq_len=100, micro_batch=1),
                                                    10**8, 1, "none") + 8e9) // 1e9)) * 1000


def test_workflow_overrides_win_over_the_estimate(tmp_path):
    schema = load_schema(Path(__file__).resolve().parents[2] / "workflow/schemas/config.schema.yaml")
    config = validate_config({"models": {"m": {"source": "org/m", "params_b": 8.03, "device": "cuda",
                                                  "resources": {"per_method": {"qlora": {"gpus": 2, "runtime": 99}},
                                                                "train_mem_mb": 50000}}},
                                 "methods": ["full", "qlora"]}, schema)
    full = train_resources(config, "m", "full-s0", tmp_path)
    # train_defaults.yaml: 4 × 2048 tokens per step without checkpointing: 45 GB of activations per GPU
    assert (full["gpus"], full["strategy"], full["mem_mb"], full["runtime"]) == (8, "zero3", 50000, 1440)
    qlora = train_resources(config, "m", "qlora-s0", tmp_path)
    assert (qlora["gpus"], qlora["mem_mb"], qlora["runtime"]) == (2, 50000, 99)
    assert sharding_flags("zero3", "/repo") == "--deepspeed /repo/config/zero3.json"
    assert sharding_flags("none", "/repo") == ""


def test_a_strategy_override_gets_the_host_memory_of_that_strategy(tmp_path):
    """train_strategy: zero2 on 8 GPUs: every process loads a 16-bit copy (8 × 2 bytes × 1.2), not ZeRO-3's one."""
    schema = load_schema(Path(__file__).resolve().parents[2] / "workflow/schemas/config.schema.yaml")
    config = validate_config({"models": {"m": {"source": "org/m", "params_b": 8.03, "device": "cuda",
                                                  "resources": {"train_strategy": "zero2"}}},
                                 "methods": ["full"]}, schema)
    plan = train_resources(config, "m", "full-s0", tmp_path)
    size = r.size_from_count(8.03)
    settings = r.TrainingJob("full", seq_len=2048, micro_batch=4, grad_accum=4)
    assert (plan["gpus"], plan["strategy"]) == (8, "zero2")
    assert plan["mem_mb"] == r.host_mem_mb(size, settings, size.total, 8, "zero2") >= (8 * 2 * 1.2 * 8.03e9 + 8e9) / 1e6
    assert sharding_flags("zero2", "/repo") == "--deepspeed /repo/config/zero2.json"
