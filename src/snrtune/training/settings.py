"""Typed training settings: src/snrtune/data/train_defaults.yaml, then the method's overrides
(snrtune.method_registry), then the user's --config YAML files (several are merged in order: an overlay states
only what differs from the file before it), then the command line (--set, --seed, --max-steps).

The training files state the budget of one optimizer step for any number of processes:
``per_device_train_batch_size × gradient_accumulation_steps`` examples. A job with W processes gets that split
(``build(..., world_size=W)``): the accumulation divided by W, else the micro-batch lowered until the rest
divides; a product that W does not divide is an error naming the file(s) and both keys.

Every value is checked for its type and range before anything is loaded; an error is one line naming
where the value came from and the key:
    training config config/x.yaml: key 'learning_rate': expected a positive number, got '-1'
A number written in a string is converted where a float is expected (PyYAML reads ``2e-4``, without a
dot, as the string '2e-4'); integers and booleans are never converted (``4.0`` or ``true`` where an
integer is expected is an error). docs/training.md documents every key.

Light: no torch or transformers at import time.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import os
import importlib.util
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import yaml

from snrtune.errors import SnrtuneError


DEFAULTS = "src/snrtune/data/train_defaults.yaml"
FLOAT_TEXT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


class _Invalid(Exception):
    """A value that fails its check; the message is what was expected."""


# --- checks: each takes the value and returns it (converted) or raises _Invalid("expected …") ---------------

def _integer(minimum: int, maximum: int | None = None) -> Callable[[Any], int]:
    def check(value):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (
                maximum is not None and value > maximum):
            raise _Invalid(f"expected an integer >= {minimum}" + (f" and <= {maximum}" if maximum is not None else ""))
        return value
    return check


def _number(minimum: float, maximum: float | None = None, low_open: bool = False, high_open: bool = True,
            words: str | None = None) -> Callable[[Any], float]:
    lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
    expected = words or (f"expected a number in {lo}{minimum:g}, {maximum:g}{hi}" if maximum is not None
                         else f"expected a number {'>' if low_open else '>='} {minimum:g}")

    def check(value):
        if isinstance(value, str) and FLOAT_TEXT.match(value.strip()):
            value = float(value)  # '2e-4': PyYAML's reading of 2e-4 (YAML 1.1 wants a dot in a float)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise _Invalid(expected)
        value = float(value)
        too_low = value <= minimum if low_open else value < minimum
        too_high = maximum is not None and (value >= maximum if high_open else value > maximum)
        if too_low or too_high:
            raise _Invalid(expected)
        return value
    return check


def _positive() -> Callable[[Any], float]:
    return _number(0, low_open=True, words="expected a positive number")


def _boolean(value):
    if not isinstance(value, bool):
        raise _Invalid("expected true or false")
    return value


def _text(value):
    if not isinstance(value, str) or not value.strip():
        raise _Invalid("expected a non-empty string")
    return value


def _choice(*allowed: str) -> Callable[[Any], str]:
    def check(value):
        if value not in allowed:
            raise _Invalid(f"expected one of {', '.join(allowed)}")
        return value
    return check


def _optional(inner: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def check(value):
        if value is None:
            return None
        try:
            return inner(value)
        except _Invalid as exc:
            raise _Invalid(f"expected null or {str(exc).removeprefix('expected ')}") from None
    return check


def _path_or_mapping(value):
    if value is not None and not isinstance(value, (str, dict)):
        raise _Invalid("expected null, a file path or a mapping")
    return value


def _fsdp(value):
    """TrainingArguments' fsdp: null, true/false, or options such as "full_shard auto_wrap"."""
    if value is None or isinstance(value, bool):
        return value
    return _text(value)


def _report_to(value):
    """transformers' report_to: a name (none, all, tensorboard, wandb, …) or a list of names, each one transformers
    knows."""
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    names = value if isinstance(value, list) else [value]
    if not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise _Invalid("expected a name (none, tensorboard, wandb, trackio, …) or a list of names")
    known = ("none", "all", *INTEGRATION_TO_CALLBACK)
    if any(name not in known for name in names):
        raise _Invalid(f"expected one or a list of {', '.join(known)}")
    return value


def _ddp_backend(value):
    """A torch.distributed backend TrainingArguments takes (its ``ddp_backend`` choices)."""
    from transformers import TrainingArguments

    field = next(f for f in dataclasses.fields(TrainingArguments) if f.name == "ddp_backend")
    return _choice(*field.metadata.get("choices", ()))(value)


def _deepspeed_config(value):
    """A DeepSpeed config: a mapping, or the path of an existing JSON file holding one."""
    value = _path_or_mapping(value)
    if isinstance(value, str):
        import json
        from pathlib import Path

        try:
            content = json.loads(Path(value).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise _Invalid("expected null, a mapping or an existing DeepSpeed JSON file (it does not exist)") from None
        except (OSError, UnicodeDecodeError, ValueError):
            raise _Invalid("expected null, a mapping or a DeepSpeed JSON file (it is not JSON)") from None
        if not isinstance(content, dict):
            raise _Invalid("expected null, a mapping or a DeepSpeed JSON file holding an object")
    return value


def _scheduler(value):
    from transformers.trainer_utils import SchedulerType

    return _choice(*(s.value for s in SchedulerType))(value)


def _optimizer(value):
    from transformers.training_args import OptimizerNames

    return _choice(*(o.value for o in OptimizerNames))(value)


# --- the settings -------------------------------------------------------------------------------------------

def _field(check: Callable[[Any], Any]):
    return dataclasses.field(metadata={"check": check})


@dataclass(frozen=True)
class TrainingSettings:
    """Every training setting (the keys of train_defaults.yaml), checked. metrics.json records ``as_dict()``."""

    # optimisation
    learning_rate: float = _field(_positive())
    lr_scheduler_type: str = _field(_scheduler)
    warmup_steps: int = _field(_integer(0))
    optim: str = _field(_optimizer)
    adam_beta1: float = _field(_number(0, 1))
    adam_beta2: float = _field(_number(0, 1))
    adam_epsilon: float = _field(_positive())
    weight_decay: float = _field(_number(0))
    max_grad_norm: float = _field(_number(0))
    per_device_train_batch_size: int = _field(_integer(1))
    per_device_eval_batch_size: int = _field(_integer(1))
    gradient_accumulation_steps: int = _field(_integer(1))
    num_epochs: float = _field(_positive())
    max_steps: int | None = _field(_optional(_integer(1)))
    seed: int = _field(_integer(0, 2**32 - 1))
    gradient_checkpointing: bool = _field(_boolean)
    attn_implementation: str | None = _field(_optional(_choice("eager", "sdpa", "flash_attention_2",
                                                                "flash_attention_3", "flex_attention")))
    # data
    dataset_format: str = _field(_choice("auto", "alpaca", "sharegpt", "messages"))
    dataset_split: str = _field(_text)
    chat_template: str | None = _field(_optional(_text))
    max_seq_length: int = _field(_integer(1))
    loss_on: str = _field(_choice("responses", "all"))
    packing: bool = _field(_boolean)
    pad_to_multiple_of: int | None = _field(_optional(_integer(1)))
    dataset_num_proc: int | None = _field(_optional(_integer(1)))
    val_fraction: float = _field(_number(0, 1))
    eval_steps: int | None = _field(_optional(_integer(1)))
    # logging and checkpoints
    logging_steps: int = _field(_integer(1))
    report_to: str | list = _field(_report_to)
    save_steps: int = _field(_integer(1))
    save_total_limit: int | None = _field(_optional(_integer(1)))
    # LoRA / QLoRA / laser-QLoRA
    lora_r: int = _field(_integer(1))
    lora_alpha: float = _field(_positive())
    lora_dropout: float = _field(_number(0, 1))
    use_rslora: bool = _field(_boolean)
    # DPO
    dpo_beta: float = _field(_positive())
    # multi-GPU
    ddp_backend: str | None = _field(_optional(_ddp_backend))
    deepspeed: str | dict | None = _field(_deepspeed_config)
    fsdp: str | bool | None = _field(_fsdp)
    fsdp_config: str | dict | None = _field(_path_or_mapping)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


KEYS = tuple(f.name for f in dataclasses.fields(TrainingSettings))


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


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, bool) or value is None:
        return f"'{yaml.safe_dump(value).splitlines()[0]}'"
    return f"'{value}'"


def default_values() -> dict[str, Any]:
    """train_defaults.yaml as parsed (unchecked)."""
    text = importlib.resources.files("snrtune").joinpath("data/train_defaults.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


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
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for where, layer in layers:
        if layer is None:
            continue
        if not isinstance(layer, Mapping):
            raise SnrtuneError(f"{where}: expected a mapping of keys to values, got {type(layer).__name__}")
        unknown = sorted(set(layer) - set(KEYS))
        if unknown:
            raise SnrtuneError(f"{where}: unknown key(s) {unknown}; expected keys of {DEFAULTS}")
        values.update(layer)
        origin.update({key: where for key in layer})
    missing = [key for key in KEYS if key not in values]
    if missing:
        raise SnrtuneError(f"training settings: no value for {missing}; expected every key of {DEFAULTS}")
    checked = {}
    for f in dataclasses.fields(TrainingSettings):
        try:
            checked[f.name] = f.metadata["check"](values[f.name])
        except _Invalid as exc:
            raise SnrtuneError(f"{origin[f.name]}: key {f.name!r}: {exc}, got {_shown(values[f.name])}") from None
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


def parse_assignments(items: list[str] | None) -> dict[str, Any] | None:
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
