"""The checks of the training settings (snrtune.training.settings): each parses one value (a number written in a
string becomes that number; nothing else is converted) and knows how the docs and the workflow schema state what
it accepts.

A ``Check`` is called with a value and returns it (converted) or raises ``Invalid("expected …")``; ``words`` is
its "type and range" in docs/training.md's table, ``schema`` the JSON schema of a value in the workflow config
(``train.method_settings``), which validate_config then runs through the check itself.

Light: no torch or transformers at import time (the scheduler and optimizer names are read from transformers
when such a value is checked).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import yaml

# a decimal number written in a string: PyYAML (YAML 1.1) reads 2e-4, without a dot, as the string '2e-4', and so
# does Snakemake's config loader; the number checks below are the one place such a string becomes a number
NUMBER_TEXT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


class Invalid(Exception):
    """A value that fails its check; the message is what was expected."""


@dataclass(frozen=True)
class Check:
    """One setting's check: ``parse(value)`` returns the value (converted) or raises Invalid."""

    parse: Callable[[Any], Any]
    words: str  # e.g. "number > 0", "null or integer >= 1"
    schema: Mapping[str, Any] = field(default_factory=dict)

    def __call__(self, value: Any) -> Any:
        return self.parse(value)


def integer(minimum: int, maximum: int | None = None) -> Check:
    words = f"integer >= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")

    def parse(value):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (
                maximum is not None and value > maximum):
            raise Invalid(f"expected an {words}")
        return value
    schema = {"type": "integer", "minimum": minimum, **({"maximum": maximum} if maximum is not None else {})}
    return Check(parse, words, schema)


def number(minimum: float, maximum: float | None = None, low_open: bool = False, high_open: bool = True,
           words: str | None = None, too_high: str | None = None) -> Check:
    lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
    text = words or (f"number in {lo}{minimum:g}, {maximum:g}{hi}" if maximum is not None
                     else f"number {'>' if low_open else '>='} {minimum:g}")
    expected = f"expected a {text}"

    def parse(value):
        if isinstance(value, str) and NUMBER_TEXT.match(value.strip()):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise Invalid(expected)
        value = float(value)
        low = value <= minimum if low_open else value < minimum
        high = maximum is not None and (value >= maximum if high_open else value > maximum)
        if high and too_high:
            raise Invalid(f"expected {too_high}")
        if low or high:
            raise Invalid(expected)
        return value

    schema: dict[str, Any] = {"type": ["number", "string"],  # a string: a number YAML 1.1 left as text
                              ("exclusiveMinimum" if low_open else "minimum"): minimum}
    if maximum is not None:
        schema["exclusiveMaximum" if high_open else "maximum"] = maximum
    return Check(parse, text, schema)


FLOAT32_MAX = 3.4028234663852886e38


def positive() -> Check:
    return number(0, low_open=True, words="positive number")


def positive_float32() -> Check:
    """A positive number that float32 can hold: torch's optimizers keep it in a float32 tensor (a larger one ends
    in a traceback inside Adam's step)."""
    return number(0, FLOAT32_MAX, low_open=True, high_open=False, words="positive number",
                  too_high=f"a number at most {FLOAT32_MAX:.3g} (float32's largest: the optimizer's tensors hold it)")


def _boolean(value):
    if not isinstance(value, bool):
        raise Invalid("expected true or false")
    return value


def _text(value):
    if not isinstance(value, str) or not value.strip():
        raise Invalid("expected a non-empty string")
    return value


BOOLEAN = Check(_boolean, "true or false", {"type": "boolean"})
TEXT = Check(_text, "non-empty string", {"type": "string", "minLength": 1})


def choice(*allowed: str) -> Check:
    def parse(value):
        if value not in allowed:
            raise Invalid(f"expected one of {', '.join(allowed)}")
        return value
    return Check(parse, ", ".join(allowed), {"enum": list(allowed)})


def optional(inner: Check) -> Check:
    def parse(value):
        if value is None:
            return None
        try:
            return inner(value)
        except Invalid as exc:
            raise Invalid(f"expected null or {str(exc).removeprefix('expected ')}") from None
    words = f"null, {inner.words}" if "enum" in inner.schema else f"null or {inner.words}"
    return Check(parse, words, nullable(inner.schema))


def nullable(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` that also takes null."""
    out = dict(schema)
    if "enum" in out:
        out["enum"] = [*out["enum"], None]
    elif "type" in out:
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = [*types, "null"]
    else:
        out = {"anyOf": [out, {"type": "null"}]} if out else {}
    return out


def _path_or_mapping(value):
    if value is not None and not isinstance(value, (str, dict)):
        raise Invalid("expected null, a file path or a mapping")
    return value


PATH_OR_MAPPING = Check(_path_or_mapping, "null, a file path or a mapping", {"type": ["null", "string", "object"]})


def _fsdp(value):
    """TrainingArguments' fsdp: null, true/false, or options such as "full_shard auto_wrap"."""
    if value is None or isinstance(value, bool):
        return value
    return _text(value)


FSDP = Check(_fsdp, "null, true/false or a string", {"type": ["null", "boolean", "string"]})


def _report_to(value):
    """transformers' report_to: a name (none, all, tensorboard, wandb, …) or a list of names, each one transformers
    knows (whether its package is installed: snrtune.training.packages)."""
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    names = value if isinstance(value, list) else [value]
    if not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise Invalid("expected a name (none, tensorboard, wandb, trackio, …) or a list of names")
    known = ("none", "all", *INTEGRATION_TO_CALLBACK)
    if any(name not in known for name in names):
        raise Invalid(f"expected one or a list of {', '.join(known)}")
    return value


REPORT_TO = Check(_report_to, "a name or a list of names",
                  {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]})


def _scheduler(value):
    from transformers.trainer_utils import SchedulerType

    return choice(*(s.value for s in SchedulerType))(value)


def _optimizer(value):
    from transformers.training_args import OptimizerNames

    return choice(*(o.value for o in OptimizerNames))(value)


def _ddp_backend(value):
    """A torch.distributed backend TrainingArguments takes (its ``ddp_backend`` choices)."""
    import dataclasses

    from transformers import TrainingArguments

    field = next(f for f in dataclasses.fields(TrainingArguments) if f.name == "ddp_backend")
    return choice(*field.metadata.get("choices", ()))(value)


def _deepspeed_config(value):
    """A DeepSpeed config: null, a mapping, or the path of an existing JSON file holding one."""
    value = _path_or_mapping(value)
    if isinstance(value, str):
        import json
        from pathlib import Path

        try:
            content = json.loads(Path(value).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise Invalid("expected null, a mapping or an existing DeepSpeed JSON file (it does not exist)") from None
        except (OSError, UnicodeDecodeError, ValueError):
            raise Invalid("expected null, a mapping or a DeepSpeed JSON file (it is not JSON)") from None
        if not isinstance(content, dict):
            raise Invalid("expected null, a mapping or a DeepSpeed JSON file holding an object")
    return value


DDP_BACKEND = Check(_ddp_backend, "a torch.distributed backend TrainingArguments takes (nccl, gloo, mpi, …)",
                    {"type": "string"})
DEEPSPEED = Check(_deepspeed_config, "null, an existing DeepSpeed JSON file or a mapping",
                  {"type": ["null", "string", "object"]})
SCHEDULER = Check(_scheduler, "a transformers scheduler name", {"type": "string"})
OPTIMIZER = Check(_optimizer, "a transformers optimizer name", {"type": "string"})


def shown(value: Any) -> str:
    """A value as an error message quotes it: the string 'fast', '-1', 'true', 'null'."""
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, bool) or value is None:
        return f"'{yaml.safe_dump(value).splitlines()[0]}'"
    return f"'{value}'"
