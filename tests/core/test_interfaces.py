"""docs/artifacts.md's command list is the interface other steps, the workflow and users rely on: every option
of every sub-command is in it, under its command, so a new flag cannot go undocumented."""

from __future__ import annotations

import argparse
import importlib
import re
from pathlib import Path

import pytest

from snrtune.cli import COMMANDS

DOC = Path(__file__).resolve().parents[2] / "docs" / "artifacts.md"


def documented() -> dict[str, str]:
    """Command → the lines of the Commands block that describe it."""
    text = DOC.read_text(encoding="utf-8")
    block = text[text.index("## Commands"):]
    block = block[block.index("```") + 3:]
    block = block[:block.index("```")]
    out: dict[str, str] = {}
    current = None
    for line in block.splitlines():
        match = re.match(r"snrtune (\w+)", line)
        if match:
            current = match.group(1)
        if current:
            out[current] = out.get(current, "") + line + "\n"
    return out


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_option_is_in_the_command_list(command):
    parser = argparse.ArgumentParser()
    importlib.import_module(COMMANDS[command][0]).add_arguments(parser)
    options = {max(action.option_strings, key=len) for action in parser._actions
               if action.option_strings and action.dest != "help"}
    text = documented().get(command, "")
    missing = sorted(option for option in options if not re.search(re.escape(option) + r"(?![\w-])", text))
    assert missing == [], f"docs/artifacts.md does not list {command}'s {', '.join(missing)}"
