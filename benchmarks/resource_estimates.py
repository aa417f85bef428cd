"""The training estimate (snrtune.workflow.resources) for Llama-3-8B and Llama-3-70B, as docs/resources.md tabulates it.

The parameter tables are built from the models' published shapes (what `snrtune fetch` writes to
snrtune_params.json): 8B: hidden 4096, 32 layers, FFN 14336, 8 KV heads of 128, vocabulary 128256, untied
head; 70B: hidden 8192, 80 layers, FFN 28672, the same heads and vocabulary. Settings: bf16, sequence length
2048, micro-batch 1, gradient checkpointing, LoRA r = 16, t = 25, 80 GB GPUs, 8 per node. Under ZeRO the model
states come from DeepSpeed's estimators where DeepSpeed is importable (`--formula`: the fallback formula).

    python benchmarks/resource_estimates.py [--formula]
"""

from __future__ import annotations

import argparse

from snrtune.workflow import resources as r

SHAPES = {"8B": dict(hidden=4096, layers=32, ffn=14336, kv=1024, vocab=128256),
          "70B": dict(hidden=8192, layers=80, ffn=28672, kv=1024, vocab=128256)}
METHODS = ("full", "spectrum", "lora", "qlora", "laser-qlora")


def parameter_table(hidden: int, layers: int, ffn: int, kv: int, vocab: int) -> dict:
    params = {"model.embed_tokens.weight": [vocab, hidden], "lm_head.weight": [vocab, hidden],
              "model.norm.weight": [hidden]}
    for i in range(layers):
        layer = f"model.layers.{i}."
        params |= {layer + "self_attn.q_proj.weight": [hidden, hidden], layer + "self_attn.k_proj.weight": [kv, hidden],
                   layer + "self_attn.v_proj.weight": [kv, hidden], layer + "self_attn.o_proj.weight": [hidden, hidden],
                   layer + "mlp.gate_proj.weight": [ffn, hidden], layer + "mlp.up_proj.weight": [ffn, hidden],
                   layer + "mlp.down_proj.weight": [hidden, ffn], layer + "input_layernorm.weight": [hidden],
                   layer + "post_attention_layernorm.weight": [hidden]}
    return {"parameters": params}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--formula", action="store_true", help="the fallback formula, not DeepSpeed's estimators")
    args = parser.parse_args()
    if args.formula:
        r.deepspeed_estimators = lambda: None
    elif r.deepspeed_estimators() is None:
        parser.error("DeepSpeed is not importable; install it (pip install 'snrtune[deepspeed]') or pass --formula")
    hw = r.Hardware(gpu_mem_gb=80, gpus_per_node=8)
    print("| model | method | trainable | model states GB | one GPU GB | estimate | GB per GPU | host MB |")
    print("|---|---|---|---|---|---|---|---|")
    for model, shape in SHAPES.items():
        size = r.size_from_table(parameter_table(**shape))
        for method in METHODS:
            top = 25 if method in ("spectrum", "laser-qlora") else None
            s = r.TrainingJob(method, top_percent=top, lora_r=16, seq_len=2048, micro_batch=1, gradient_checkpointing=True)
            trainable = r.trainable_params(size, s)
            est = r.estimate(size, s, hw)
            plan = "1 GPU" if est.gpus == 1 else f"{est.gpus} GPUs, {est.strategy}"
            one_gpu = r.per_device_bytes(size, s, trainable, 1, "none") / 1e9
            states = r.model_state_bytes(size, s, trainable) / 1e9
            name = f"{method}-t{top}" if top else method
            notes = [n for n in est.notes if not n.startswith("runtime unknown")]  # no token count here
            print(f"| {model} | {name} | {trainable / 1e9:.3g} B | {states:.1f} | {one_gpu:.1f} | {plan} | "
                  f"{est.gpu_mem_gb} | {est.mem_mb} |" + (f" {'; '.join(notes)}" if notes else ""))


if __name__ == "__main__":
    main()
