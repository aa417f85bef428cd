"""What a training job needs: GPUs, memory per GPU, host memory, runtime and the launch (docs/resources.md).

The estimate comes from the model's size (the parameter table ``snrtune_params.json`` that ``fetch`` wrote,
or, before the model is fetched, a parameter count ``params_b`` from the config) and the run's settings
(method, precision, sequence length, micro-batch, gradient checkpointing, LoRA rank, the number of GPUs).
Per GPU, in bytes:

    model states  = weights + trainable × state bytes      (sharded over the GPUs under ZeRO-3)
    activations   = micro_batch × seq_len × layers × hidden × (34 | 2 with checkpointing) + one layer
    logits        = 2 × micro_batch × seq_len × vocab × 4
    total         = 1.1 × (model states + activations + logits) + 1.5 GiB   (allocator, CUDA context)

weights are 2 bytes per parameter in bf16 (4 on a CPU), 0.55 for NF4 with double quantization;
state bytes per trainable parameter are 14 for full and Spectrum (bf16 gradient, fp32 master copy,
AdamW's two fp32 moments: 16 bytes in all with the bf16 weight) and 16 for fp32 LoRA adapters.

Under ZeRO (zero2, zero3, zero3_offload), where DeepSpeed is importable, the model states per GPU and on the
host come from DeepSpeed's own estimators instead (``zero_model_states``); the formula is the fallback.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from snrtune import method_registry
from snrtune.errors import SnrtuneError
from snrtune.training.settings import default_values

TRAINING_DEFAULTS = default_values()  # a TrainingJob's defaults are the training settings' own

GIB = 1024 ** 3
BF16_BYTES = 2.0   # a 16-bit weight
NF4_BYTES = 0.55   # a 4-bit NF4 weight with its quantization constants (bitsandbytes 4-bit bases are not sharded
                   # here: one GPU per process)
ACTIVATION_BYTES = 34  # bytes per token, layer and hidden unit in 16-bit (Korthikanti et al. 2022, flash attention)
CHECKPOINT_BYTES = 2   # with gradient checkpointing: each layer's 16-bit input is kept
OVERHEAD = 1.1
FIXED_GIB = 1.5
GPU_COUNTS = (1, 2, 4, 8, 16)
ZERO_BUFFER = 1.5  # DeepSpeed's estimators' additional_buffer_factor (their default)


@dataclass(frozen=True)
class ModelSize:
    """What the estimate needs of a model."""
    total: int            # parameters (tied weights once)
    linear: int           # parameters of the per-layer 2-D weights (Spectrum's and LoRA's targets)
    lora_per_rank: int    # Σ (in + out) over those weights: LoRA rank r adds r × this parameters
    hidden: int
    layers: int
    vocab: int
    largest: int          # parameters of the largest tensor (ZeRO-3 gathers it whole: DeepSpeed's "largest layer")


@dataclass(frozen=True)
class Hardware:
    gpu_mem_gb: float = 80.0      # usable memory of one GPU (GB = 1e9 bytes)
    gpus_per_node: int = 8
    gpu_tflops: float = 312.0     # dense bf16 peak of one GPU (A100: 312, H100 SXM: 989)
    mfu: float = 0.35             # the fraction of that peak training reaches
    headroom: float = 0.9         # plan to fill at most this fraction of a GPU


@dataclass(frozen=True)
class TrainingJob:
    """What the estimate needs of one training job (the settings themselves are snrtune.training.settings'
    TrainingSettings; the workflow builds this from them)."""
    method: str
    top_percent: float | None = None
    lora_r: int = TRAINING_DEFAULTS["lora_r"]
    seq_len: int = TRAINING_DEFAULTS["max_seq_length"]
    micro_batch: int = TRAINING_DEFAULTS["per_device_train_batch_size"]
    grad_accum: int = 1
    gradient_checkpointing: bool = False
    device: str = "cuda"
    max_steps: int | None = None
    train_tokens: int | None = None   # tokens of one pass over the data × epochs (when max_steps is not set)


@dataclass
class Estimate:
    gpus: int
    strategy: str                  # none | zero2 | zero3 | zero3_offload
    gpu_mem_gb: float | None       # per GPU (None on a CPU)
    mem_mb: int                    # host memory of the job
    runtime_min: int | None        # None when the number of training tokens is unknown
    trainable: int
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------- model size

def size_from_table(table: dict) -> ModelSize:
    """From ``snrtune_params.json``: ``parameters`` maps named_parameters() names to shapes."""
    params = table.get("parameters") or {}
    if not params:
        raise SnrtuneError("parameter table has no 'parameters'; expected snrtune_params.json from `snrtune fetch`")
    total = sum(math.prod(shape) for shape in params.values())
    linear = per_rank = 0
    layers: set[str] = set()
    hidden = vocab = 0
    for name, shape in params.items():
        parts = name.split(".")
        index = next((p for p in parts if p.isdigit()), None)
        if re.search(r"(embed_tokens|wte|word_embeddings)\.weight$", name) and len(shape) == 2:
            vocab, hidden = shape
        if index is None or len(shape) < 2 or not name.endswith("weight"):
            continue
        layers.add(index)
        experts = math.prod(shape[:-2])  # 3-D fused experts: one matrix per expert
        linear += math.prod(shape)
        per_rank += experts * (shape[-1] + shape[-2])
    if not hidden:  # no named embedding: the most common small side of the layer matrices
        sides = [min(s[-2:]) for n, s in params.items() if len(s) >= 2]
        hidden = max(set(sides), key=sides.count) if sides else 1
    largest = max(math.prod(shape) for shape in params.values())
    return ModelSize(total, linear, per_rank, hidden, max(len(layers), 1), vocab or 32000, largest)


def size_from_count(params_b: float, vocab: int = 32000) -> ModelSize:
    """A dense decoder of ``params_b`` billion parameters, for planning before the model is fetched.

    Shapes of Llama-like models: P ≈ 13·L·d² with L ≈ d/100 layers, so d ≈ (P/0.13)^(1/3) (rounded to
    128); 90 % of the parameters sit in the layer matrices, LoRA adds r × 20·d per layer, and the largest
    tensor is the embedding (vocab × d).
    """
    total = int(round(params_b * 1e9))
    hidden = max(128, int(round((total / 0.13) ** (1 / 3) / 128)) * 128)
    layers = max(1, int(round(total / (13 * hidden ** 2))))
    return ModelSize(total, int(0.9 * total), 20 * hidden * layers, hidden, layers, vocab, vocab * hidden)


# --------------------------------------------------------------------------------------------- the estimate

def trainable_params(size: ModelSize, s: TrainingJob) -> int:
    """Full: every parameter; Spectrum: t % of the layer matrices; LoRA/QLoRA: r × Σ(in+out);
    laser-QLoRA: the same rank on t % of them (with match_params_of qlora it trains as many as QLoRA,
    which this bounds from above).

    The rule follows the method's MethodSpec (snrtune.method_registry): an adapter method is LoRA (on every
    linear layer, or on the selection's share of them); any other method trains the model's own weights (the
    selection's share of the layer matrices, or every parameter: full fine-tuning, and the bound for a method
    that trains some other subset)."""
    spec = method_registry.get(s.method)
    share = (s.top_percent or 100) / 100 if spec.needs_selection else 1.0
    if spec.is_adapter:
        return int(s.lora_r * size.lora_per_rank * share)
    return int(share * size.linear) if spec.needs_selection else size.total


def weight_bytes(method: str) -> float:
    return NF4_BYTES if method_registry.get(method).four_bit else BF16_BYTES


def quantized(method: str) -> bool:
    return method_registry.get(method).four_bit


def state_bytes(method: str) -> float:
    """Per trainable parameter on a GPU: a 16-bit gradient and fp32 AdamW state (+ master copy of an adapter)."""
    return 16.0 if method_registry.get(method).is_adapter else 14.0


def model_state_bytes(size: ModelSize, s: TrainingJob, trainable: int) -> float:
    adapter = method_registry.get(s.method).is_adapter
    weight = weight_bytes(s.method) if s.device == "cuda" else (NF4_BYTES if quantized(s.method) else 4.0)
    per_trainable = state_bytes(s.method) if s.device == "cuda" else (16.0 if adapter else 12.0)
    return weight * size.total + per_trainable * trainable


def activation_bytes(size: ModelSize, s: TrainingJob) -> float:
    tokens = s.micro_batch * s.seq_len
    scale = 1.0 if s.device == "cuda" else 2.0  # fp32 on a CPU
    per_layer = CHECKPOINT_BYTES if s.gradient_checkpointing else ACTIVATION_BYTES
    layers = tokens * size.hidden * (per_layer * size.layers + (ACTIVATION_BYTES if s.gradient_checkpointing else 0))
    logits = 2 * tokens * size.vocab * 4
    return scale * layers + logits


def deepspeed_estimators():
    """DeepSpeed's model-state estimators (stage 3, stage 1/2), or None where DeepSpeed is not importable."""
    try:
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
        from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs
    except ImportError:
        return None
    return estimate_zero3_model_states_mem_needs, estimate_zero2_model_states_mem_needs


def zero_model_states(size: ModelSize, trainable: int, gpus: int, strategy: str) -> tuple[float, float] | None:
    """(bytes per GPU, host bytes) of the model states under ZeRO, from DeepSpeed's own estimators (the
    figures their ``estimate_zero{2,3}_model_states_mem_needs_all_cold`` tables print, optimizer offload
    as config/zero3_offload.json sets it: parameters stay on the GPUs, partitioned loading on). None for an
    unsharded run or without DeepSpeed.

    The estimators count every parameter as trained (16-bit weight and gradient, fp32 gradient, master
    copy and AdamW moments: 18 bytes on the GPUs, or 2 with the optimizer on the host, which then holds 16
    × their buffer factor 1.5), so they are asked for the trainable parameters; each frozen parameter adds
    its 16-bit weight, partitioned under ZeRO-3, on every GPU under ZeRO-2."""
    functions = deepspeed_estimators() if strategy in ("zero2", "zero3", "zero3_offload") else None
    if functions is None:
        return None
    zero3, zero2 = functions
    frozen = size.total - trainable
    if strategy == "zero2":
        host, gpu = zero2(trainable, num_gpus_per_node=gpus, cpu_offload=False, additional_buffer_factor=ZERO_BUFFER)
        return gpu + 2 * frozen, host
    host, gpu, _ = zero3(trainable, size.largest, num_gpus_per_node=gpus, cpu_offload=strategy == "zero3_offload",
                         cpu_offload_params=False, zero_init=True, additional_buffer_factor=ZERO_BUFFER)
    return gpu + 2 * frozen / gpus, host


def per_device_bytes(size: ModelSize, s: TrainingJob, trainable: int, gpus: int, strategy: str) -> float:
    states = model_state_bytes(size, s, trainable)
    zero = zero_model_states(size, trainable, gpus, strategy) if s.device == "cuda" else None
    if zero is not None:
        states = zero[0]
    elif strategy == "zero2":  # gradients and optimizer state partitioned, the 16-bit weights on every GPU
        states = weight_bytes(s.method) * size.total + (states - weight_bytes(s.method) * size.total) / gpus
    elif strategy == "zero3":
        states /= gpus
    elif strategy == "zero3_offload":  # fp32 master copy and AdamW moments live in host memory
        states = (weight_bytes(s.method) * size.total + 2 * trainable) / gpus
    return OVERHEAD * (states + activation_bytes(size, s)) + FIXED_GIB * GIB


def train_tokens(s: TrainingJob) -> int | None:
    """Tokens the run trains on: max_steps × the training file's examples per step (micro-batch × accumulation,
    the same at any GPU count: the job divides them between its processes) × sequence length."""
    if s.max_steps:
        return s.max_steps * s.micro_batch * s.grad_accum * s.seq_len
    return s.train_tokens


def runtime_minutes(size: ModelSize, s: TrainingJob, trainable: int, gpus: int, hw: Hardware) -> int | None:
    """6·P FLOPs per token for full fine-tuning (forward 2P, backward 4P); a frozen weight skips its
    weight gradient (4·P + 2·trainable); checkpointing adds one forward (2·P). ×1.25 and 20 minutes for
    loading, evaluation and checkpoints."""
    tokens = train_tokens(s)
    if tokens is None or gpus == 0:
        return None
    flops = 4 * size.total + 2 * trainable + (2 * size.total if s.gradient_checkpointing else 0)
    seconds = tokens * flops / (gpus * hw.gpu_tflops * 1e12 * hw.mfu)
    return int(math.ceil(1.25 * seconds / 60)) + 20


def host_mem_mb(size: ModelSize, s: TrainingJob, trainable: int, gpus: int, strategy: str) -> int:
    """Each process holds a 16-bit copy while loading (ZeRO-3 loads one copy, partitioned as it goes), 1.2×;
    under ZeRO the host also holds what DeepSpeed's estimator says (``zero_model_states``; the larger of the
    two counts), else, with the optimizer offloaded, 12 bytes per trainable parameter (fp32 master, AdamW
    moments); 8 GB for the data, tokenizer and libraries. A CPU run holds everything in host memory."""
    if s.device != "cuda":
        total = per_device_bytes(size, s, trainable, 1, "none")
    else:
        copies = 1 if strategy.startswith("zero3") else max(gpus, 1)
        loading = copies * 2 * size.total * 1.2
        zero = zero_model_states(size, trainable, gpus, strategy)
        if zero is not None:
            total = max(loading, zero[1])
        else:
            total = loading + (12 * trainable if strategy == "zero3_offload" else 0)
    return int(math.ceil((total + 8e9) / 1e6 / 1000)) * 1000


def estimate(size: ModelSize, s: TrainingJob, hw: Hardware = Hardware()) -> Estimate:
    """The smallest number of GPUs (on one node) whose memory holds the run; sharded (ZeRO-3) beyond one
    GPU, with the optimizer offloaded to the host when even a whole node is too small."""
    trainable = trainable_params(size, s)
    if s.device != "cuda":
        return Estimate(0, "none", None, host_mem_mb(size, s, trainable, 0, "none"), None, trainable)
    budget = hw.gpu_mem_gb * 1e9 * hw.headroom
    counts = [n for n in GPU_COUNTS if n <= hw.gpus_per_node] or [1]
    notes: list[str] = []
    if quantized(s.method):
        choice = (1, "none")
        if per_device_bytes(size, s, trainable, 1, "none") > budget:
            notes.append(f"{s.method} does not fit one {hw.gpu_mem_gb:g} GB GPU; set a larger GPU or an override")
    else:
        plans = [(n, "none" if n == 1 else "zero3") for n in counts]
        plans += [(n, "zero3_offload") for n in counts if n > 1]
        choice = next((p for p in plans if per_device_bytes(size, s, trainable, *p) <= budget), None)
        if choice is None:
            choice = (counts[-1], "zero3_offload")
            notes.append(f"does not fit {counts[-1]} GPUs of {hw.gpu_mem_gb:g} GB even with ZeRO-3 offload")
    gpus, strategy = choice
    per_gpu = per_device_bytes(size, s, trainable, gpus, strategy)
    if runtime_minutes(size, s, trainable, gpus, hw) is None:
        notes.append("runtime unknown: set train max_steps or data tokens")
    return Estimate(gpus, strategy, round(per_gpu / 1e9, 1), host_mem_mb(size, s, trainable, gpus, strategy),
                    runtime_minutes(size, s, trainable, gpus, hw), trainable, notes)
