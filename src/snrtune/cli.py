"""`snrtune <command> …`: one sub-command per step of the DAG.

Each command lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``.
Only the chosen command's module is imported, so ``snrtune --help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys
import threading

from snrtune import __version__, arguments, method_registry
from snrtune.errors import SnrtuneError

COMMANDS = {
    "fetch": ("snrtune.fetch.model", "Make a standard HF model directory from a hub id, a local dir or a GGUF file."),
    "prefetch": ("snrtune.fetch.prefetch", "Download a hub dataset and lm-eval task data into the HF cache for offline jobs."),
    "scan": ("snrtune.spectrum.scan", "Compute the random-matrix-theory SNR of every weight matrix."),
    "select": ("snrtune.spectrum.select", "Select the top t% modules per type by SNR and export trainer configs."),
    "train": ("snrtune.training.train", f"Fine-tune with {', '.join(method_registry.names())}."),
    "pick": ("snrtune.training.sweep", "Pick the learning-rate sweep's candidate with the lowest validation loss."),
    "merge": ("snrtune.training.merge", "Turn a training run into a standard HF model directory."),
    "evaluate": ("snrtune.evaluation.evaluate", "Benchmark a model directory with lm-evaluation-harness."),
    "report": ("snrtune.report.report", "Gather runs and evaluations into tables, plots and report.html."),
}


class ParserError(Exception):
    """A bad command line: printed as one line (no usage block), exit status 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, with its errors (a bad value, a missing argument) as one line: `snrtune CMD: error: …`."""

    def error(self, message: str):
        raise ParserError(message)


def _top_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="snrtune",
        description="SNR-guided fine-tuning comparison: fetch, prefetch, scan, select, train, merge, evaluate, report.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n" + "\n".join(f"  {name:<9} {help_}" for name, (_, help_) in COMMANDS.items())
        + "\n\n`snrtune COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"snrtune {__version__}")
    parser.add_argument("command", choices=list(COMMANDS), metavar="COMMAND")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    command = argv[0] if argv else ""
    try:
        if not argv or command.startswith("-"):
            top.parse_args(argv or ["--help"])
            return 0
        if command not in COMMANDS:
            top.error(f"unknown command {command!r}; expected one of: {', '.join(COMMANDS)}")
    except ParserError as exc:
        print(f"snrtune: error: {exc}", file=sys.stderr)
        return 2
    module_name, help_ = COMMANDS[command]
    module = importlib.import_module(module_name)
    parser = OneLineParser(prog=f"snrtune {command}", description=help_)
    module.add_arguments(parser)
    try:
        args = parser.parse_args(argv[1:])
        arguments.expand_outputs(args)  # `~` once, for both the checks and the writes
        arguments.check_outputs(args, command)  # before any work: an output belongs to the step that wrote it
        with arguments.locked_outputs(args, command), terminated_as_exit():
            return int(module.run(args) or 0)
    except (SnrtuneError, ParserError) as exc:
        print(f"snrtune {command}: error: {exc}", file=sys.stderr)
        return 2


@contextlib.contextmanager
def terminated_as_exit():
    """SIGTERM (a scheduler's or Snakemake's stop) raised as SystemExit(143), so the step's cleanup runs (a
    half-written output's temporary directory is removed; `train` keeps RUN_DIR.partial for --resume) instead of
    the process vanishing mid-write."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
