"""Packed batches as rows against TRL's flattened padding-free layout: forward + backward time and peak memory.

The same tokens, packed examples of --example-len tokens each with its own position ids restarting at 0, go to
the model twice per step, in one run:

- rows (snrtune's layout for sdpa/eager): a batch of --batch rows × --seq-len tokens;
- flattened (TRL's padding-free layout): one row of --batch·--seq-len tokens.

transformers turns restarting position ids into a block-diagonal causal mask in both; with sdpa and eager the
flattened one spans (batch·seq-len)² entries, batch times the rows' attention work. The model has SmolLM2-135M's
shape with random weights (no download); on a GPU it runs in bf16 (fp16 where bf16 is missing), on the CPU in
fp32. Prints seconds per step (median of --steps after one warm-up), peak memory (CUDA allocated on a GPU,
process RSS on the CPU), the ratio flattened / rows, and whether the two layouts gave the same loss.

    python benchmarks/packing.py                          # CPU: 2 threads, 4 × 256 tokens
    python benchmarks/packing.py --batch 8 --seq-len 1024 # on a GPU
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch
import transformers


def smollm2_shaped(layers: int, attn: str, dtype, device):
    config = transformers.LlamaConfig(hidden_size=576, num_hidden_layers=layers, num_attention_heads=9,
                                      num_key_value_heads=3, intermediate_size=1536, vocab_size=49152,
                                      tie_word_embeddings=True, max_position_embeddings=8192,
                                      attn_implementation=attn, use_cache=False)  # a cache hides packing
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config).to(device=device, dtype=dtype).train()


def layouts(batch: int, seq_len: int, example_len: int, device) -> dict[str, dict]:
    """The same tokens as rows and flattened, position ids restarting every ``example_len`` tokens."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 49152, (batch, seq_len), generator=generator)
    positions = (torch.arange(seq_len) % example_len).repeat(batch, 1)
    labels = ids.clone()
    labels[positions == 0] = -100  # no example is predicted from the one before it (as both collators do)
    rows = {"input_ids": ids, "position_ids": positions, "labels": labels}
    flat = {key: value.reshape(1, -1) for key, value in rows.items()}
    return {name: {k: v.to(device) for k, v in batch_.items()} for name, batch_ in (("rows", rows), ("flattened", flat))}


def peak_memory(device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def time_layout(model, inputs: dict, steps: int, device) -> tuple[float, float, int]:
    """(median seconds per forward+backward, the loss, peak memory) after one warm-up step."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, loss = [], None
    for step in range(steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        loss = model(**inputs).loss
        loss.backward()
        model.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step:
            times.append(time.perf_counter() - start)
    return statistics.median(times), loss.item(), peak_memory(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--example-len", type=int, default=64, help="tokens per packed example")
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    parser.add_argument("--threads", type=int, default=2, help="torch threads on the CPU")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
        dtype = torch.float32
    else:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    model = smollm2_shaped(args.layers, args.attn, dtype, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} thread(s)"
    print(f"{name}, {dtype}, {args.attn}, SmolLM2-135M shape ({args.layers} layers), {args.batch} rows × "
          f"{args.seq_len} tokens, examples of {args.example_len} tokens, median of {args.steps} steps")
    results = {}
    for layout, inputs in layouts(args.batch, args.seq_len, args.example_len, device).items():
        results[layout] = time_layout(model, inputs, args.steps, device)
        seconds, loss, peak = results[layout]
        print(f"  {layout:<10} {seconds:8.3f} s/step  peak {peak / 2**20:8.0f} MiB  loss {loss:.5f}")
    (rows_s, rows_loss, rows_peak), (flat_s, flat_loss, flat_peak) = results["rows"], results["flattened"]
    same = abs(rows_loss - flat_loss) <= 2e-2 * abs(rows_loss) if dtype != torch.float32 else \
        abs(rows_loss - flat_loss) <= 1e-4 * abs(rows_loss)
    print(f"flattened / rows: time {flat_s / rows_s:.2f}×, peak memory {flat_peak / rows_peak:.2f}× "
          f"(on the CPU the peak is the process's, shared by both); same loss: {same}")


if __name__ == "__main__":
    main()
