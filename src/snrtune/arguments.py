"""Command-line values checked by the parser, before a sub-command does any work (docs/checks.md).

``positive_float`` / ``positive_int`` / ``device`` are argparse ``type=`` functions; ``output`` declares a
sub-command's output path with the inputs it must stay clear of, checked by ``check_outputs`` right after
parsing (snrtune.fileio.check_output).
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

from snrtune.fileio import check_output
from snrtune.errors import SnrtuneError


DEVICE = re.compile(r"(cpu|cuda|cuda:\d+|mps)")
DEVICES = "cpu, cuda, cuda:N or mps"


def positive_float(text: str) -> float:
    """A finite number > 0 (``nan``, ``inf``, ``0`` and ``-1`` are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; expected a finite number > 0") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is out of range; expected a finite number > 0")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer; expected an integer > 0") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is out of range; expected an integer > 0")
    return value


def device(text: str) -> str:
    """A torch device string snrtune can run on (whether it is present is checked by the step)."""
    if not DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; expected {DEVICES}")
    return text


def output(parser: argparse.ArgumentParser, kind: str, inputs: tuple[str, ...] = (), dest: str = "out",
           inside_ok: tuple[str, ...] = ()) -> None:
    """Declare that argument ``dest`` names an output ("dir" or "file") that must not be, hold or lie inside
    the inputs ``inputs`` (argument names as the user types them: ``model_dir``, ``--data``; a directory
    in ``inside_ok`` may hold it)."""
    declared = list(parser.get_default("snrtune_outputs") or [])
    declared.append((dest, kind, tuple(inputs), tuple(inside_ok)))
    parser.set_defaults(snrtune_outputs=declared)


def _values(args: argparse.Namespace, name: str) -> list[str]:
    value = getattr(args, name.lstrip("-").replace("-", "_"), None)
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]


def check_outputs(args: argparse.Namespace) -> None:
    """Raise SnrtuneError (one line) for a declared output that would remove or overwrite what snrtune did
    not write."""
    declared = getattr(args, "snrtune_outputs", None) or []
    outputs = {"--" + dest.replace("_", "-") for dest, *_ in declared}
    for dest, kind, inputs, inside_ok in declared:
        out = getattr(args, dest, None)
        if out is None:
            continue
        for name in inputs:  # another output of the same step: the two must differ (neither exists yet)
            other = _values(args, name) if name in outputs else []
            if other and Path(other[0]).expanduser().resolve() == Path(out).expanduser().resolve():
                raise SnrtuneError(f"--{dest.replace('_', '-')} {out} is the input {name} {other[0]}; "
                                   f"expected a path outside the inputs")
        pairs = [(name, value) for name in inputs for value in _values(args, name)]
        check_output(out, kind, pairs, inside_ok, flag="--" + dest.replace("_", "-"))
