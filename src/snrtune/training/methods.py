"""Per-method model preparation: one small function per fine-tuning method.

Each ``prepare_*`` is named by its method's spec in snrtune.method_registry and called as
``prepare_x(model, settings, selection, match_params_of)``: a loaded model (4-bit when the spec says so),
the TrainingSettings, the selection dict (None for methods without one) and the --match-params-of value.
It returns the model to train plus a dict of facts for metrics.json. The optimizer later sees only
``requires_grad`` parameters.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch

from snrtune import method_registry
from snrtune.errors import SnrtuneError


def compute_dtype() -> torch.dtype:
    """bf16 on a GPU that supports it, fp16 on an older GPU (V100, T4), fp32 on the CPU."""
    if not torch.cuda.is_available():
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def weights_dtype(compute: torch.dtype) -> torch.dtype:
    """The dtype trainable weights are loaded in: fp16 mixed precision keeps fp32 master weights."""
    return torch.float32 if compute == torch.float16 else compute


def load_model(model_dir, four_bit: bool = False, dtype: torch.dtype | None = None,
               attn_implementation: str | None = None, quant_storage: torch.dtype | None = None):
    """A causal LM from ``model_dir``: in the weights dtype, or NF4 4-bit with double quantization.

    ``quant_storage`` is the dtype the packed 4-bit weights are stored in: FSDP and ZeRO-3 shard only
    parameters of one dtype, so sharded QLoRA stores them in the compute dtype (PEFT's FSDP-QLoRA and
    DeepSpeed-QLoRA recipes); None: uint8.
    """
    import transformers

    dtype = dtype or compute_dtype()
    kwargs: dict[str, Any] = {"dtype": weights_dtype(dtype)}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if four_bit:
        storage = {"bnb_4bit_quant_storage": quant_storage} if quant_storage is not None else {}
        kwargs["quantization_config"] = transformers.BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype, **storage)
        kwargs["device_map"] = _device_map()
    return transformers.AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)


def _device_map():
    """Each process loads its 4-bit model onto its own device (DDP needs one model per rank)."""
    import os

    if not torch.cuda.is_available():
        return {"": "cpu"}
    return {"": int(os.environ.get("LOCAL_RANK", 0))}


def unwrapped_name(name: str) -> str:
    """A parameter or module name as the plain model names it (PEFT adds a prefix and ``base_layer``)."""
    name = name.removeprefix("base_model.model.")
    return name.replace(".base_layer.", ".").removesuffix(".base_layer")


def n_elements(param: torch.Tensor) -> int:
    """Elements a parameter stands for: a bnb 4-bit parameter packs two per byte (count the original); under
    ZeRO-3 partitioned loading a parameter's own data is empty and DeepSpeed keeps its count in ``ds_numel``."""
    quant_state = getattr(param, "quant_state", None)
    if quant_state is not None:
        return math.prod(quant_state.shape)
    ds_numel = getattr(param, "ds_numel", None)
    return int(ds_numel) if ds_numel is not None else param.numel()


def count_params(model) -> tuple[int, int]:
    """(trainable, total) elements; tied parameters count once."""
    params = list(model.parameters())  # parameters() yields a shared tensor once
    return (sum(n_elements(p) for p in params if p.requires_grad), sum(n_elements(p) for p in params))


def match_selection(model, patterns: list[str]) -> list[str]:
    """Names (named_parameters(), tied duplicates included) that some pattern ``re.match``es.

    A pattern that matches nothing is an error: a silent no-op would train something else than asked.
    """
    names = [name for name, _ in model.named_parameters(remove_duplicate=False)]
    unmatched = [p for p in patterns if not any(re.match(p, n) for n in names)]
    if unmatched:
        raise SnrtuneError(f"selection pattern(s) {unmatched} match no parameter of the model "
                           f"(e.g. {names[0]!r}); expected patterns for named_parameters() names")
    return [n for n in names if any(re.match(p, n) for p in patterns)]


def prepare_full(model, settings, selection, match_params_of) -> tuple[Any, dict]:
    for param in model.parameters():
        param.requires_grad_(True)
    return model, {}


def prepare_spectrum(model, settings, selection: dict, match_params_of) -> tuple[Any, dict]:
    """Freeze everything, unfreeze exactly the selection's parameters; the count must equal sel.yaml's."""
    names = match_selection(model, list(selection["unfrozen_parameters"]))
    for param in model.parameters():
        param.requires_grad_(False)
    for name in names:
        model.get_parameter(name).requires_grad_(True)
    trainable, _ = count_params(model)
    expected = selection.get("trainable_params")
    if expected is not None and trainable != int(expected):
        raise SnrtuneError(f"the selection unfreezes {trainable} parameters but sel.yaml states "
                           f"trainable_params={expected}; expected the two to agree (was sel.yaml made for this model?)")
    # No enable_input_require_grads(): non-reentrant checkpointing (the only kind used here) passes gradients
    # to the parameters inside a checkpointed layer whatever its input, and forcing input gradients would run
    # the backward pass through the frozen layers below the lowest trained one.
    return model, {"unfrozen_names": names}


def lora_scale(alpha: float, r: int, rslora: bool) -> float:
    """The factor a LoRA update B·A is multiplied by: alpha/r, or alpha/sqrt(r) with rsLoRA."""
    return alpha / math.sqrt(r) if rslora else alpha / r


def scaled_alpha(alpha: float, r: int, new_r: int, rslora: bool) -> float:
    """The alpha that keeps ``lora_scale`` unchanged when the rank moves from ``r`` to ``new_r``.

    Raising laser-QLoRA's rank to match QLoRA's parameter count with a fixed alpha would shrink its update
    scale (alpha/r) and so compare learning rates, not methods: alpha rises with r (with sqrt(r) under rsLoRA).
    """
    return alpha * (math.sqrt(new_r / r) if rslora else new_r / r)


def lora_facts(settings, r: int, alpha: float) -> dict:
    """What metrics.json records of an adapter: the rank, alpha and the effective scale actually used."""
    return {"lora_r": r, "lora_alpha": alpha, "use_rslora": settings.use_rslora,
            "lora_scale": lora_scale(alpha, r, settings.use_rslora)}


def lora_config(settings, target_modules, r: int | None = None, alpha: float | None = None):
    import peft

    return peft.LoraConfig(r=int(r or settings.lora_r), lora_alpha=alpha or settings.lora_alpha,
                           lora_dropout=settings.lora_dropout, use_rslora=settings.use_rslora,
                           target_modules=target_modules, bias="none", task_type="CAUSAL_LM")


def prepare_lora(model, settings, selection, match_params_of) -> tuple[Any, dict]:
    import peft

    model = peft.get_peft_model(model, lora_config(settings, "all-linear"))
    return model, {**lora_facts(settings, settings.lora_r, settings.lora_alpha), "target_modules": lora_targets(model)}


def prepare_qlora(model, settings, selection, match_params_of) -> tuple[Any, dict]:
    import peft

    model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=settings.gradient_checkpointing,
                                                 gradient_checkpointing_kwargs={"use_reentrant": False})
    model = peft.get_peft_model(model, lora_config(settings, "all-linear"))
    return model, {**lora_facts(settings, settings.lora_r, settings.lora_alpha), "target_modules": lora_targets(model)}


def linear_modules(model) -> dict[str, Any]:
    """Linear (or bnb Linear4bit) modules by name, the output head excluded (PEFT's 'all-linear' set)."""
    out_head = model.get_output_embeddings()
    return {name: m for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and m is not out_head}


def adaptable_modules(model) -> dict[str, Any]:
    """Modules a selection may put LoRA on: linear layers, the output head and embeddings."""
    return {name: m for name, m in model.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Embedding))}


def lora_width(module) -> int:
    """in + out of a linear layer (num_embeddings + dim of an embedding): a rank-r adapter trains r times this."""
    if isinstance(module, torch.nn.Embedding):
        return module.num_embeddings + module.embedding_dim
    return module.in_features + module.out_features


def rank_matching(model, targets: list[str], reference_r: int) -> int:
    """LoRA rank on ``targets`` giving as many trainable parameters as rank ``reference_r`` on every linear layer.

    A rank-r adapter on an (in, out) layer trains r·(in + out) parameters, so the rank scales by the ratio of
    summed (in + out): the laser-QLoRA notebook's rule (same parameters as QLoRA r=32 → larger r).
    """
    modules = adaptable_modules(model)
    reference = sum(lora_width(m) for m in linear_modules(model).values())
    return max(1, round(reference_r * reference / sum(lora_width(modules[t]) for t in targets)))


def prepare_laser_qlora(model, settings, selection: dict, match_params_of: str | None) -> tuple[Any, dict]:
    """QLoRA with adapters only on the selection's modules (sel.yaml exports.peft.target_modules)."""
    import peft

    targets = list(selection["exports"]["peft"]["target_modules"])
    modules = adaptable_modules(model)
    missing = [t for t in targets if t not in modules]
    if missing:
        raise SnrtuneError(f"selection module(s) {missing[:5]} are not linear or embedding layers of the model; "
                           f"expected module names like {next(iter(linear_modules(model)))!r}")
    r = rank_matching(model, targets, settings.lora_r) if match_params_of else settings.lora_r
    alpha = scaled_alpha(settings.lora_alpha, settings.lora_r, r, settings.use_rslora)
    model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=settings.gradient_checkpointing,
                                                 gradient_checkpointing_kwargs={"use_reentrant": False})
    # PEFT matches a listed name exactly or as a dotted suffix, so full names cannot catch "…layers.13…"
    model = peft.get_peft_model(model, lora_config(settings, targets, r, alpha))
    adapted = lora_targets(model)
    if sorted(adapted) != sorted(targets):
        raise SnrtuneError(f"LoRA went on {len(adapted)} modules but the selection names {len(targets)}")
    return model, {**lora_facts(settings, r, alpha), "target_modules": adapted, "matched_params_of": match_params_of}


def lora_targets(model) -> list[str]:
    """Unwrapped names of the modules that carry a LoRA adapter."""
    def adapted(m):
        return len(getattr(m, "lora_A", {})) > 0 or len(getattr(m, "lora_embedding_A", {})) > 0

    return sorted(unwrapped_name(name) for name, m in model.named_modules() if adapted(m))


def check_request(method: str, selection: dict | None, match_params_of: str | None) -> method_registry.MethodSpec:
    """The spec of ``method`` once the request fits it (a selection when it needs one; --match-params-of
    only for rank-matching methods); one-line errors otherwise, before anything is loaded."""
    spec = method_registry.get(method)
    if spec.needs_selection and selection is None:
        raise SnrtuneError(f"method {method!r} needs --selection sel.yaml (from `snrtune select`)")
    if selection is not None and not spec.needs_selection:
        users = ", ".join(method_registry.selection_names())
        raise SnrtuneError(f"--selection: method {method!r} trains without a selection and would ignore it; expected "
                           f"no --selection, or a method that trains one ({users})")
    if match_params_of is not None and match_params_of not in spec.matches_params_of:
        pairs = "; ".join(f"{name}: {', '.join(method_registry.get(name).matches_params_of)}"
                          for name in method_registry.names() if method_registry.get(name).rank_matching)
        raise SnrtuneError(f"--match-params-of {match_params_of!r} does not apply to {method!r}; it applies to {pairs}")
    return spec


def prepare(method: str, model_dir, settings, selection: dict | None, match_params_of: str | None = None):
    """Load ``model_dir`` and make it ready to train with ``method``: (model, facts)."""
    spec = check_request(method, selection, match_params_of)
    dtype = compute_dtype()
    sharded = bool(settings.fsdp or settings.deepspeed)
    model = load_model(model_dir, four_bit=spec.four_bit, dtype=dtype, attn_implementation=settings.attn_implementation,
                       quant_storage=dtype if (spec.four_bit and sharded) else None)
    return spec.prepare_function()(model, settings, selection, match_params_of)
