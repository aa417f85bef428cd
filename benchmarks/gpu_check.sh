#!/usr/bin/env bash
# The checks to run whenever a GPU is lent (at most 8 minutes on one GPU: a stage that would start after the
# budget is spent is reported as skipped, and each is capped), from the repository root:
#
#   bash benchmarks/gpu_check.sh                    # on the GPU (--device cuda)
#   bash benchmarks/gpu_check.sh --device cpu       # smoke mode: tiny model and sizes, CPU only (tests/core/test_benchmarks.py)
#   bash benchmarks/gpu_check.sh --work DIR         # keep the logs and runs in DIR (default: a temporary directory)
#
# 1. scan: `snrtune scan --device cuda` against float32 torch.linalg.svdvals on the same GPU
#    (benchmarks/scan.py --device): wall-time ratio and the largest SNR difference; Llama-3-8B-shaped matrices.
# 2. trainer against the bare loop (benchmarks/train.py), full and spectrum, per-step times: batch shapes that
#    change every step on both sides (--pad-to none --bare-shapes variable), then one shape on both sides
#    (--pad-to max: every batch padded to --seq-len). If the trainer's overhead over the bare loop shrinks with
#    fixed shapes, the shapes were the cost.
# 3. `snrtune train` under DeepSpeed ZeRO-3 (config/zero3.json) and FSDP (config/fsdp.yaml), full and spectrum,
#    one process (torchrun --nproc_per_node 1): does it train, and the trainable/total parameters it records
#    against the selection's. On the CPU FSDP is skipped (accelerate applies FSDP on GPUs only), as is ZeRO-3
#    where deepspeed is not importable.
# Prints one table at the end (and writes it to WORK/summary.txt); each stage's full output is in WORK/*.log.
# Needs the environment scripts/install.sh builds (with a CUDA torch on the GPU: TORCH_SPEC=torch).
set -euo pipefail

device=cuda
work=""
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    *) echo "gpu_check.sh: error: unknown argument '$1'; expected --device cuda|cpu or --work DIR" >&2; exit 2 ;;
  esac
done
case "$device" in
  cuda)
    steps=20; batch=8; seq_len=512; threads=8; scan_flags=""; budget=480; slack=1
    python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" || {
      echo "gpu_check.sh: error: --device cuda but torch sees no CUDA GPU; expected a GPU, or --device cpu" >&2; exit 2; } ;;
  cpu)
    export CUDA_VISIBLE_DEVICES=""  # every stage on the CPU, whatever the machine has
    steps=3; batch=2; seq_len=64; threads=1; scan_flags="--skip-8b-shapes"; budget=3600
    slack=5 ;;  # a shared CPU may be much slower than an idle one: the stage caps are 5x the GPU's
  *) echo "gpu_check.sh: error: --device '$device'; expected cuda or cpu" >&2; exit 2 ;;
esac

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
export PYTHONPATH="$repo/src${PYTHONPATH:+:$PYTHONPATH}"
if [ -z "$work" ]; then work="$(mktemp -d -t snrtune-gpu-check.XXXXXX)"; fi
mkdir -p "$work"
echo "gpu_check: device $device, work $work"

# the model: SmolLM2-135M's shape with random weights on the GPU (no download), the tests' tiny Llama on the CPU
model="$work/model"
if [ ! -f "$model/config.json" ]; then
  if [ "$device" = cuda ]; then
    python -c "import sys; sys.path.insert(0, 'benchmarks'); from pathlib import Path; from train import random_smollm2; random_smollm2(Path(sys.argv[1]))" "$model" > "$work/model.log" 2>&1
  else
    python -c "import sys; sys.path.insert(0, 'tests'); from tiny import make_tiny_model; make_tiny_model('llama', sys.argv[1])" "$model" > "$work/model.log" 2>&1
  fi
fi
python -c "
import sys, torch, transformers, trl, peft, accelerate
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'
print(f'torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}, '
      f'peft {peft.__version__}, accelerate {accelerate.__version__}, GPU: {gpu}')" | tee "$work/versions.txt"

stage() {  # stage NAME SECONDS COMMAND…: run with a time limit (within the budget), output to WORK/NAME.log;
  local name="$1" limit=$(($2 * slack)); shift 2  # never stops the script
  local left=$((budget - SECONDS))
  if [ "$left" -lt 20 ]; then
    echo "$name: skipped (the ${budget}-second budget is spent)" | tee -a "$work/stages.txt"; return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  local start=$SECONDS
  if timeout "$limit" "$@" > "$work/$name.log" 2>&1; then status=ok; else status="failed (exit $?)"; fi
  echo "$name: $status in $((SECONDS - start)) s" | tee -a "$work/stages.txt"
}

stage scan 120 python benchmarks/scan.py --model-dir "$model" --device "$device" --repeat 1 $scan_flags
common=(--model-dir "$model" --methods full,spectrum --steps "$steps" --batch "$batch" --seq-len "$seq_len"
        --threads "$threads")
stage train-variable 180 python benchmarks/train.py "${common[@]}" --pad-to none --bare-shapes variable --work "$work/variable"
stage train-fixed 180 python benchmarks/train.py "${common[@]}" --pad-to max --bare-shapes fixed --work "$work/fixed"

# sharded training through snrtune train, one process
selection="$work/sharded/sel.yaml"
mkdir -p "$work/sharded"
stage sharded-select 120 bash -c 'python -m snrtune.cli scan "$1" --out "$2/snr.json" &&
  python -m snrtune.cli select "$2/snr.json" --top-percent 25 --out "$2/sel.yaml"' _ "$model" "$work/sharded"
cat > "$work/sharded/train.yaml" <<EOF
max_steps: 4
per_device_train_batch_size: 2
max_seq_length: $seq_len
packing: true
val_fraction: 0.0
save_steps: 1000000
logging_steps: 1
EOF
cat "$work/sharded/train.yaml" > "$work/sharded/train-fsdp.yaml"
printf 'fsdp: true\nfsdp_config: %s\n' "$repo/config/fsdp.yaml" >> "$work/sharded/train-fsdp.yaml"
data="$repo/src/snrtune/data/demo/toolcall_train.jsonl"
has_deepspeed=$(python -c "import importlib.util; print(int(importlib.util.find_spec('deepspeed') is not None))")
for strategy in zero3 fsdp; do
  for method in full spectrum; do
    name="$strategy-$method"
    if [ "$strategy" = fsdp ] && [ "$device" = cpu ]; then
      echo "$name: skipped (accelerate applies FSDP on GPUs only)" | tee -a "$work/stages.txt"; continue
    fi
    if [ "$strategy" = zero3 ] && [ "$has_deepspeed" = 0 ]; then
      echo "$name: skipped (deepspeed is not importable)" | tee -a "$work/stages.txt"; continue
    fi
    flags=(--config "$work/sharded/train.yaml")
    [ "$strategy" = zero3 ] && flags+=(--deepspeed "$repo/config/zero3.json")
    [ "$strategy" = fsdp ] && flags=(--config "$work/sharded/train-fsdp.yaml")
    [ "$method" = spectrum ] && flags+=(--selection "$selection")
    rm -rf "$work/sharded/$name" "$work/sharded/$name.partial"
    stage "$name" 150 torchrun --standalone --nproc_per_node 1 -m snrtune.cli train "$model" --method "$method" \
      --data "$data" --out "$work/sharded/$name" "${flags[@]}"
  done
done

python - "$work" "$device" <<'EOF' | tee "$work/summary.txt"
"""The summary table: one line per check, from the stages' logs and outputs."""
import json
import re
import statistics
import sys
from pathlib import Path

import yaml

work, device = Path(sys.argv[1]), sys.argv[2]
stages = dict(line.split(": ", 1) for line in (work / "stages.txt").read_text().splitlines())
rows = [("versions", (work / "versions.txt").read_text().strip())]


def log(name):
    path = work / f"{name}.log"
    return path.read_text(errors="replace") if path.is_file() else ""


scan = log("scan")
speed = re.search(r"^speed-up: ([\d.]+)x", scan, re.M)
diff = re.search(r"^max SNR difference from float32 svdvals: (\S+) \(relative (\S+)\)", scan, re.M)
rows.append((f"scan vs float32 svdvals ({device})",
             f"speed-up {speed.group(1)}x, max SNR difference {diff.group(1)} (relative {diff.group(2)})"
             if speed and diff else stages["scan"]))
for shape, slow, quick, ratio, precision, rel in re.findall(  # benchmarks/scan.py's 8B-shaped matrices
        r"^\s*(\d+x\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)x\s+(float\d+(?: svd)?)\s+(\S+)$", scan, re.M):
    rows.append((f"scan, one {shape} matrix ({device})",
                 f"svdvals {slow} s, snrtune {quick} s ({ratio}x, {precision}), SNR relative difference {rel}"))
NAMES = ("full", "spectrum", "bare-full", "bare-spectrum")
for shape in ("variable", "fixed"):
    text = log(f"train-{shape}")
    steps = {}  # "seconds of each step" block of benchmarks/train.py: name, then each step's seconds
    if "seconds of each step" in text:
        for line in text.split("seconds of each step", 1)[1].splitlines()[1:]:
            cells = line.split()
            if cells and cells[0] in NAMES:
                steps[cells[0]] = [float(x) for x in cells[1:]]
    for method in ("full", "spectrum"):
        trainer, bare = steps.get(method, [])[1:], steps.get(f"bare-{method}", [])[1:]
        if trainer and bare:  # the median step after the first (warm-up) one, on each side
            a, b = statistics.median(trainer), statistics.median(bare)
            value = (f"median step {a:.4f} s vs {b:.4f} s: {a / b:.2f}x the bare loop "
                     f"(slowest trainer step {max(trainer):.4f} s)")
        else:
            value = stages[f"train-{shape}"]
        rows.append((f"trainer vs bare, {method}, {shape} shapes", value))
for strategy in ("zero3", "fsdp"):
    for method in ("full", "spectrum"):
        name = f"{strategy}-{method}"
        status = stages.get(name, "not run")
        metrics_file = work / "sharded" / name / "metrics.json"
        if status.startswith("ok") and metrics_file.is_file():
            metrics = json.loads(metrics_file.read_text())
            counts = f"{metrics['trainable_params']:,} of {metrics['total_params']:,} trainable"
            if method == "spectrum":
                selected = yaml.safe_load((work / "sharded" / "sel.yaml").read_text())["trainable_params"]
                counts += f" (selection: {selected:,})"
            status = f"{status}; {counts}, final loss {metrics['train_loss'][-1][1]:.4f}"
        rows.append((f"snrtune train, {strategy}, {method}", status))
width = max(len(check) for check, _ in rows)
print(f"\n{'check':<{width}}  result")
for check, value in rows:
    print(f"{check:<{width}}  {value}")
EOF
