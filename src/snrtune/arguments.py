"""Command-line values checked by the parser, before a sub-command does any work (docs/checks.md).

``positive_float`` / ``positive_int`` / ``device`` / ``seed`` are argparse ``type=`` functions; ``output``
declares a sub-command's output path with the inputs it must stay clear of and the siblings it derives from it,
checked by ``check_outputs`` right after parsing (snrtune.fileio.check_output: the output belongs to the step)
and locked by ``locked_outputs`` while the command runs.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
from pathlib import Path
from typing import Iterator

from snrtune import fileio
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


def seed(text: str) -> int:
    """A random seed: an integer in [0, 2**32) (numpy's range; python, torch and lm-eval take it too)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer; expected a seed in [0, 2**32)") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"{text} is out of range; expected a seed in [0, 2**32)")
    return value


def check_device_present(device: str, flag: str = "--device") -> None:
    """The device the step computes on is there (a CUDA GPU for cuda/cuda:N, Apple's MPS for mps): one line
    before anything loads otherwise. Imports torch."""
    import torch

    if device.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.partition(":")[2] or 0)
        if index >= count:
            have = f"{count} CUDA GPU(s)" if count else "no CUDA GPU"
            raise SnrtuneError(f"{flag} {device} requested but this machine has {have}; expected --device cpu"
                               + (f" or cuda:0…cuda:{count - 1}" if count else ""))
    if device == "mps" and not torch.backends.mps.is_available():
        raise SnrtuneError(f"{flag} mps requested but MPS is not available here; expected --device cpu")


def output(parser: argparse.ArgumentParser, kind: str, inputs: tuple[str, ...] = (), dest: str = "out",
           inside_ok: tuple[str, ...] = (), siblings=None, pairs: tuple[str, ...] = ()) -> None:
    """Declare that argument ``dest`` names an output ("dir" or "file") of the sub-command that must not be,
    hold or lie inside the inputs ``inputs`` (argument names as the user types them: ``model_dir``, ``--data``;
    a directory in ``inside_ok`` may hold it; an input in ``pairs`` is given as NAME=PATH). ``siblings(args,
    out)`` lists the (path, kind, suffix) of the files or directories the step derives from the output
    (``OUT.partial``, ``OUT.stats.json``, …): each must be absent or this step's own."""
    declared = list(parser.get_default("snrtune_outputs") or [])
    declared.append((dest, kind, tuple(inputs), tuple(inside_ok), siblings, tuple(pairs)))
    parser.set_defaults(snrtune_outputs=declared)


def _values(args: argparse.Namespace, name: str, pairs: tuple[str, ...] = ()) -> list[str]:
    value = getattr(args, name.lstrip("-").replace("-", "_"), None)
    if value is None:
        return []
    values = [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
    return [v.partition("=")[2] or v for v in values] if name in pairs else values


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def declared_outputs(args: argparse.Namespace, step: str) -> list[tuple[str, str, fileio.Owner, str]]:
    """(dest, kind, owner, path) of every output the command line gives."""
    out = []
    for dest, kind, *_ in getattr(args, "snrtune_outputs", None) or []:
        value = getattr(args, dest, None)
        if value is not None:
            out.append((dest, kind, fileio.Owner(step, _flag(dest)), str(value)))
    return out


def expand_outputs(args: argparse.Namespace) -> None:
    """``~`` in an output path, expanded once, before both the checks and the writes (a quoted ``'~/m'`` reaches
    snrtune unexpanded by the shell)."""
    for dest, *_ in getattr(args, "snrtune_outputs", None) or []:
        value = getattr(args, dest, None)
        if isinstance(value, str) and value.startswith("~"):
            setattr(args, dest, os.path.expanduser(value))


def check_outputs(args: argparse.Namespace, step: str) -> None:
    """Raise SnrtuneError (one line) for a declared output of ``step`` that would remove or overwrite what snrtune
    did not write or another step wrote, or whose derived siblings are not this step's (snrtune.fileio)."""
    declared = getattr(args, "snrtune_outputs", None) or []
    outputs = {_flag(dest) for dest, *_ in declared}
    force = bool(getattr(args, "force", False))
    for dest, kind, inputs, inside_ok, siblings, pairs in declared:
        out = getattr(args, dest, None)
        if out is None:
            continue
        flag, owner = _flag(dest), fileio.Owner(step, _flag(dest))
        for name in inputs:  # another output of the same step: the two must differ (neither exists yet)
            other = _values(args, name) if name in outputs else []
            if other and Path(other[0]).resolve() == Path(out).resolve():
                raise SnrtuneError(f"{flag} {out} is the input {name} {other[0]}; expected a path outside the inputs")
        named = [(name, value) for name in inputs for value in _values(args, name, pairs)]
        fileio.check_output(out, kind, named, inside_ok, flag=flag, owner=owner, force=force)
        for path, sibling_kind, suffix in (siblings(args, out) if siblings else []):
            fileio.check_output(path, sibling_kind, named, inside_ok, flag=f"{flag}'s {suffix}", only_inputs=True)
            reason = fileio.sibling_refusal(path, sibling_kind, owner.sibling(suffix), f"{flag}'s {suffix}")
            if reason:
                raise SnrtuneError(reason)


@contextlib.contextmanager
def locked_outputs(args: argparse.Namespace, step: str) -> Iterator[None]:
    """Hold ``fileio.output_lock`` on every output the command line gives, for the whole command; under a launcher
    (torchrun: RANK set) only the first process locks, the others write nothing of their own."""
    with contextlib.ExitStack() as stack:
        if int(os.environ.get("RANK", "0")) == 0:
            for dest, _, _, path in declared_outputs(args, step):
                stack.enter_context(fileio.output_lock(path, _flag(dest)))
        yield
