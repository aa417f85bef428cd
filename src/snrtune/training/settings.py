"""Typed training settings, each defined once: a field of ``TrainingSettings`` holds its type, default, check and
help text (``setting``). From those fields come src/snrtune/data/train_defaults.yaml, the workflow schema's
``train.method_settings`` keys and docs/training.md's settings table (snrtune.training.setting_views).

A run's settings: the defaults, then the method's overrides (snrtune.method_registry), then the user's --config
YAML files (several are merged in order: an overlay states only what differs from the file before it), then the
command line (--set, --seed, --max-steps).

The training files state the budget of one optimizer step for any number of processes:
``per_device_train_batch_size × gradient_accumulation_steps`` examples. A job with W processes gets that split
(``build(..., world_size=W)``): the accumulation divided by W, else the micro-batch lowered until the rest
divides; a product that W does not divide is an error naming the file(s) and both keys.

Every value is checked for its type and range before anything is loaded (snrtune.training.setting_checks); an
error is one line naming where the value came from and the key:
    training config config/x.yaml: key 'learning_rate': expected a positive number, got '-1'
A number written in a string is converted where a float is expected (PyYAML reads ``2e-4``, without a
dot, as the string '2e-4'); integers and booleans are never converted (``4.0`` or ``true`` where an
integer is expected is an error). docs/training.md documents every key.

Light: no torch or transformers at import time.
"""

from __future__ import annotations

import dataclasses
import os
import importlib.util
from dataclasses import dataclass
from typing import Any, Mapping

import yaml

from snrtune.errors import SnrtuneError
from snrtune.training.setting_checks import (BOOLEAN, DDP_BACKEND, DEEPSPEED, FSDP, OPTIMIZER, PATH_OR_MAPPING,
                                             REPORT_TO, SCHEDULER, TEXT, Check, Invalid, choice, integer, number,
                                             optional, positive, positive_float32, shown)


DEFAULTS = "src/snrtune/data/train_defaults.yaml"


def setting(default: Any, check: Check, help: str, per_method: bool = False, section: str | None = None):
    """One training setting: its default, its check, its help text (the YAML comment and the docs' meaning);
    ``per_method``: the workflow may set it per method (``train.method_settings``); ``section``: a heading in
    train_defaults.yaml starts at this setting."""
    return dataclasses.field(default=default, metadata={"check": check, "help": help, "per_method": per_method,
                                                        "section": section})


@dataclass(frozen=True)
class TrainingSettings:
    """Every training setting, checked. metrics.json records ``as_dict()``. The defaults are those of the seed
    Spectrum walk-through: lr 2e-4, cosine, 100 warm-up steps, AdamW betas (0.9, 0.999) eps 1e-8, gradient
    accumulation 4, 2 epochs."""

    learning_rate: float = setting(
        2.0e-4, positive_float32(), "peak learning rate (the seed walk-through's); at most float32's largest, 3.4e38",
        per_method=True, section="optimisation")
    lr_scheduler_type: str = setting(
        "cosine", SCHEDULER, "any transformers scheduler name: cosine, linear, constant, …")
    warmup_steps: int = setting(100, integer(0), "optimizer steps of learning-rate warm-up")
    optim: str = setting("adamw_torch", OPTIMIZER, "AdamW; the optimizer only ever sees requires_grad parameters")
    adam_beta1: float = setting(0.9, number(0, 1), "AdamW's beta1")
    adam_beta2: float = setting(0.999, number(0, 1), "AdamW's beta2")
    adam_epsilon: float = setting(1.0e-8, positive(), "AdamW's epsilon")
    weight_decay: float = setting(0.0, number(0), "AdamW's decoupled weight decay", per_method=True)
    max_grad_norm: float = setting(1.0, number(0), "gradient clipping norm (0: no clipping)")
    per_device_train_batch_size: int = setting(
        4, integer(1), "examples per micro-batch; × gradient_accumulation_steps = the examples of one optimizer step "
        "at any number of processes (docs/training.md, Batch and steps)")
    per_device_eval_batch_size: int = setting(4, integer(1), "examples per validation batch")
    gradient_accumulation_steps: int = setting(
        4, integer(1), "micro-batches per optimizer step (divided between a job's processes)")
    num_epochs: float = setting(2, positive(), "passes over the training data (when max_steps is null)")
    max_steps: int | None = setting(
        None, optional(integer(1)), "when set, wins over num_epochs (the --max-steps option overrides it)")
    seed: int = setting(
        0, integer(0, 2**32 - 1), "model init of adapters, data order, validation split (the --seed option overrides it)")
    gradient_checkpointing: bool = setting(False, BOOLEAN, "non-reentrant; frozen embeddings still pass gradients")
    attn_implementation: str | None = setting(
        None, optional(choice("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")),
        "passed to from_pretrained (null: transformers' default, sdpa where the model supports it); "
        "flash-attention needs its package, checked when the settings are read (docs/checks.md), and a GPU")
    dataset_format: str = setting(
        "auto", choice("auto", "alpaca", "sharegpt", "messages"),
        "the rows' format, detected from the columns with auto (DPO: prompt/chosen/rejected); docs/training.md, Data",
        section="data")
    dataset_split: str = setting("train", TEXT, "split of a hub dataset")
    chat_template: str | None = setting(
        None, optional(TEXT), "a Jinja string or file; required when the tokenizer has none (docs/training.md, Data)")
    max_seq_length: int = setting(2048, integer(1), "tokens per sequence: longer ones are cut (docs/training.md, Data)")
    loss_on: str = setting(
        "responses", choice("responses", "all"),
        "responses (assistant turns only) or every token (docs/training.md, Data)")
    packing: bool = setting(
        False, BOOLEAN, "TRL best-fit packing of whole examples up to max_seq_length; position ids restart per "
        "example, so no token attends to another example (docs/training.md, Data)")
    pad_to_multiple_of: int | None = setting(
        None, optional(integer(1)), "SFT: pad each batch to a multiple of N tokens (TRL's pad_to_multiple_of; null: "
        "to its longest row, so the batch shape changes from step to step); N = max_seq_length gives every batch "
        "one shape (benchmarks/train.py --pad-to)")
    dataset_num_proc: int | None = setting(
        None, optional(integer(1)), "processes tokenizing the data (TRL's dataset_num_proc; null: one); rank 0 "
        "first, the others read its cache")
    val_fraction: float = setting(
        0.02, number(0, 1), "rows held out (seeded) for the validation loss; 0 turns evaluation off")
    eval_steps: int | None = setting(
        None, optional(integer(1)), "evaluate every N steps (null: once, at the end)")
    logging_steps: int = setting(
        1, integer(1), "the train loss and one progress line (step, loss, lr, tokens/s, ETA) every N steps",
        section="logging and checkpoints")
    report_to: str | list = setting(
        "none", REPORT_TO, "transformers' report_to: none, tensorboard, wandb, trackio, mlflow, … (a list for "
        "several; the package must be installed)")
    save_steps: int = setting(
        100, integer(1), "checkpoint every N steps into RUN_DIR.partial/checkpoints (for --resume)")
    save_total_limit: int | None = setting(2, optional(integer(1)), "checkpoints kept")
    lora_r: int = setting(32, integer(1), "LoRA rank (lora, qlora, laser-qlora)", per_method=True,
                          section="LoRA / QLoRA / laser-QLoRA")
    lora_alpha: float = setting(16, positive(), "LoRA alpha: updates are scaled by alpha/r", per_method=True)
    lora_dropout: float = setting(0.05, number(0, 1), "dropout on each adapted layer's input", per_method=True)
    use_rslora: bool = setting(
        False, BOOLEAN, "rsLoRA: scale updates by alpha/sqrt(r) instead of alpha/r", per_method=True)
    dpo_beta: float = setting(0.1, positive(), "DPO's beta", section="DPO (--stage dpo)")
    ddp_backend: str | None = setting(
        None, optional(DDP_BACKEND), "a torch.distributed backend (null: nccl on GPU, gloo on CPU)",
        section="multi-GPU (under torchrun / accelerate launch); passed to transformers.TrainingArguments")
    deepspeed: str | dict | None = setting(
        None, DEEPSPEED, "a DeepSpeed ZeRO JSON config (config/zero2.json, config/zero3.json) or a mapping")
    fsdp: str | bool | None = setting(
        None, FSDP,
        'true (or a legacy string such as "full_shard auto_wrap") turns FSDP on (docs/training.md, Multi-GPU)')
    fsdp_config: str | dict | None = setting(
        None, PATH_OR_MAPPING, "a JSON or YAML path (config/fsdp.yaml) or a mapping, as TrainingArguments takes it")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def setting_fields() -> tuple[dataclasses.Field, ...]:
    """The settings' fields, in order (read at call time, so a test may add one)."""
    return dataclasses.fields(TrainingSettings)


KEYS = tuple(f.name for f in setting_fields())


def default_values() -> dict[str, Any]:
    """Every setting's default, from its field (train_defaults.yaml lists the same values)."""
    return {f.name: f.default for f in setting_fields()}


def per_method_keys() -> tuple[str, ...]:
    """The settings the workflow may give each method its own value of (``train.method_settings``)."""
    return tuple(f.name for f in setting_fields() if f.metadata["per_method"])


def parse_value(key: str, value: Any, where: str) -> Any:
    """One setting's value as its check parses it, or a one-line SnrtuneError: ``{where}: expected …, got …``
    (validate_config reads the workflow config's per-method settings and learning rates with it)."""
    check = next((f.metadata["check"] for f in setting_fields() if f.name == key), None)
    if check is None:
        raise SnrtuneError(f"{where}: {key!r} is not a training setting; expected one of {', '.join(KEYS)}")
    try:
        return check(value)
    except Invalid as exc:
        raise SnrtuneError(f"{where}: {exc}, got {shown(value)}") from None


# --- optional packages: a setting that needs one is refused before anything loads if it is not installed ----------

# (key, value) -> (module, what installs it); DeepSpeed has its own check (require_deepspeed, below)
OPTIONAL_PACKAGES = {
    ("attn_implementation", "flash_attention_2"): ("flash_attn", "pip install flash-attn --no-build-isolation"),
    ("attn_implementation", "flash_attention_3"): (
        "flash_attn_interface", "build flash-attention's hopper/ directory (github.com/Dao-AILab/flash-attention)"),
}
FOUR_BIT_PACKAGE = ("bitsandbytes", "pip install bitsandbytes")  # the NF4 base of qlora and laser-qlora


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (found, not imported: no torch here)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check_packages(settings: "TrainingSettings", where: str, method: str | None = None) -> None:
    """One line naming the setting (``where``: the training config it came from) or the method and the
    package it needs, when that is not installed: flash-attention for ``attn_implementation``, bitsandbytes for
    a 4-bit method, DeepSpeed for ``deepspeed`` (require_deepspeed). `snrtune train` and the workflow's
    pre-flight call it when they read the settings."""
    require_deepspeed(settings, where)
    from snrtune.training.packages import check_setting_packages

    check_setting_packages(settings, where, installed)  # optim, report_to, ddp_backend
    for (key, value), (module, install) in OPTIONAL_PACKAGES.items():
        if getattr(settings, key) == value and not installed(module):
            raise SnrtuneError(f"{where}: key {key!r}: {value!r} needs the {module} package, which is not "
                               f"installed: {install}")
    if method is not None:
        from snrtune import method_registry

        spec = method_registry.find(method)
        module, install = FOUR_BIT_PACKAGE
        if spec is not None and spec.four_bit and not installed(module):
            raise SnrtuneError(f"method {method!r} trains on a 4-bit NF4 base, which needs the {module} package, "
                               f"which is not installed: {install}")


def check_bitsandbytes_kernels(method: str) -> None:
    """bitsandbytes loads its native library for the machine's accelerator when imported; where none fits (a
    CUDA version it ships no build for, a missing CUDA runtime), it keeps a stand-in that fails at the first
    4-bit operation, after the model loaded. This says so first. On a CPU none is needed (its torch ops
    serve). Imports bitsandbytes (and torch): for `snrtune train`, not for the workflow's pre-flight."""
    module, install = FOUR_BIT_PACKAGE
    if not installed(module):
        raise SnrtuneError(f"method {method!r} trains on a 4-bit NF4 base, which needs the {module} package, "
                           f"which is not installed: {install}")
    from bitsandbytes import cextension

    if isinstance(cextension.lib, cextension.ErrorHandlerMockBNBNativeLibrary) \
            and cextension.BNB_BACKEND not in ("CPU", "XPU"):
        why = " ".join(str(getattr(cextension.lib, "error_msg", "") or "").split())[:200]
        raise SnrtuneError(f"method {method!r} trains on a 4-bit NF4 base, but bitsandbytes has no "
                           f"{cextension.BNB_BACKEND} kernels for this machine ({why or 'its library did not load'}): "
                           f"pip install -U bitsandbytes (a build for this {cextension.BNB_BACKEND} version)")


BUDGET_KEYS = ("per_device_train_batch_size", "gradient_accumulation_steps")


def per_process(batch: int, accumulation: int, world_size: int) -> tuple[int, int] | None:
    """(micro-batch, accumulation) per process that keep ``batch × accumulation`` examples per optimizer step
    over ``world_size`` processes: the accumulation divided by W when W divides it, else the largest micro-batch
    <= ``batch`` that divides the examples each process takes; None when W does not divide the product."""
    if accumulation % world_size == 0:
        return batch, accumulation // world_size
    examples = batch * accumulation
    if examples % world_size:
        return None
    share = examples // world_size
    micro = max(d for d in range(1, min(batch, share) + 1) if share % d == 0)
    return micro, share // micro


def examples_per_step(cfg: "TrainingSettings", world_size: int = 1) -> int:
    """Examples per optimizer step of ``cfg`` (per-process values) run on ``world_size`` processes."""
    return cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * world_size


def _split(checked: dict[str, Any], origin: dict[str, str], world_size: int) -> dict[str, Any]:
    batch, accumulation = (checked[k] for k in BUDGET_KEYS)
    split = per_process(batch, accumulation, world_size)
    if split is None:
        where = list(dict.fromkeys(origin[k] for k in BUDGET_KEYS))
        raise SnrtuneError(f"{' and '.join(where)}: keys {' × '.join(map(repr, BUDGET_KEYS))} = {batch} × "
                           f"{accumulation} = {batch * accumulation} examples per optimizer step do not split "
                           f"over {world_size} processes; expected a product divisible by {world_size}")
    return dict(zip(BUDGET_KEYS, split))


def build(layers: list[tuple[str, Mapping[str, Any] | None]], world_size: int = 1) -> TrainingSettings:
    """Settings from (origin, values) layers, later ones overriding earlier ones; the first must set every key.
    With ``world_size`` > 1 the batch keys are those of one of W processes (``per_process``).

    ``origin`` names where the values came from, for error messages ("training config config/x.yaml").
    """
    fields = setting_fields()
    keys = [f.name for f in fields]
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for where, layer in layers:
        if layer is None:
            continue
        if not isinstance(layer, Mapping):
            raise SnrtuneError(f"{where}: expected a mapping of keys to values, got {type(layer).__name__}")
        unknown = sorted(set(layer) - set(keys))
        if unknown:
            raise SnrtuneError(f"{where}: unknown key(s) {unknown}; expected keys of {DEFAULTS}")
        values.update(layer)
        origin.update({key: where for key in layer})
    missing = [key for key in keys if key not in values]
    if missing:
        raise SnrtuneError(f"training settings: no value for {missing}; expected every key of {DEFAULTS}")
    checked = {}
    for f in fields:
        try:
            checked[f.name] = f.metadata["check"](values[f.name])
        except Invalid as exc:
            raise SnrtuneError(f"{origin[f.name]}: key {f.name!r}: {exc}, got {shown(values[f.name])}") from None
    if world_size > 1:
        checked.update(_split(checked, origin, world_size))
    return TrainingSettings(**checked)


DEEPSPEED_INSTALL = "pip install 'snrtune[deepspeed]'"  # what scripts/install.sh installs


def deepspeed_installed() -> bool:
    """Whether DeepSpeed is importable here (found, not imported: importing it loads torch)."""
    import importlib.util

    return importlib.util.find_spec("deepspeed") is not None


def require_deepspeed(settings: TrainingSettings, where: str = "training config") -> None:
    """A run that asks for DeepSpeed (the ``deepspeed`` key or ``--deepspeed``) where it is not installed stops
    here with one line, before anything loads, instead of failing at job time after waiting for GPUs."""
    if settings.deepspeed and not deepspeed_installed():
        raise SnrtuneError(f"{where}: key 'deepspeed' ({settings.deepspeed}) asks for DeepSpeed, which is not "
                           f"installed; expected `{DEEPSPEED_INSTALL}` or deepspeed: null")


def parse_set_flags(items: list[str] | None) -> dict[str, Any] | None:
    """``--set KEY=VALUE`` items as a mapping (each value read as a YAML scalar: 3.0e-3, 16, true, null)."""
    if not items:
        return None
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise SnrtuneError(f"--set {item!r}: expected KEY=VALUE, e.g. --set learning_rate=3.0e-3")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise SnrtuneError(f"--set {item!r}: the value is not a YAML scalar") from None
        if isinstance(value, (dict, list)):
            raise SnrtuneError(f"--set {item!r}: expected a single value, got a {type(value).__name__}")
        out[key.strip()] = value
    return out


def config_paths(path: "str | os.PathLike | list[str] | tuple[str, ...] | None") -> list[str]:
    """A training config as a list of files: None -> [], one path -> [path], a list -> itself."""
    if path is None:
        return []
    return [str(path)] if isinstance(path, (str, os.PathLike)) else [str(p) for p in path]


def read_config(path: str) -> dict[str, Any]:
    """One training YAML (empty -> {}); a missing or unreadable file is a one-line error naming it."""
    from snrtune.fileio import read_yaml

    if not os.path.lexists(path):
        raise SnrtuneError(f"training config {path} does not exist")
    values = read_yaml(path, "training config")  # UTF-8, valid YAML, every key once; one line naming the file
    return {} if values is None else values


def load_settings(path: str | list[str] | None = None, method_overrides: Mapping[str, Any] | None = None,
                  method: str | None = None, assignments: Mapping[str, Any] | None = None,
                  world_size: int = 1, **command_line: Any) -> TrainingSettings:
    """Defaults < the method's overrides < the YAML file(s) at ``path``, merged in order < ``--set`` assignments
    < command-line values that are not None; the batch split over ``world_size`` processes."""
    files = [(f"training config {p}", read_config(p)) for p in config_paths(path)]
    given = {key: value for key, value in command_line.items() if value is not None}
    return build([(f"training defaults {DEFAULTS}", default_values()),
                  (f"method {method!r} training overrides", method_overrides or None),
                  *files,
                  ("command line --set", assignments or None),
                  ("command line", given or None)], world_size=world_size)


def load_config(path: str | list[str] | None, seed: int | None = None, max_steps: int | None = None,
                method: str | None = None, overrides: Mapping[str, Any] | None = None,
                world_size: int = 1) -> TrainingSettings:
    """A run's settings, as `snrtune train` builds them and the workflow plans them (snrtune.workflow.plan):
    the defaults < ``method``'s overrides (snrtune.method_registry) < the YAML file(s) at ``path`` < ``--set``
    (``overrides``) < ``--seed``/``--max-steps``, checked; the batch of one optimizer step split over
    ``world_size`` processes (``per_process``)."""
    from snrtune import method_registry

    defaults = method_registry.get(method).train_overrides if method else None
    return load_settings(path, defaults, method, overrides, world_size=world_size, seed=seed, max_steps=max_steps)
