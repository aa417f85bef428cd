"""What is derived from the training settings' fields (snrtune.training.settings.TrainingSettings), so that each
setting is defined once:

- ``defaults_yaml()``: src/snrtune/data/train_defaults.yaml, every key with its default and help;
- ``settings_table()``: the settings table in docs/training.md ("Config keys");
- ``method_settings_schema()``: the workflow schema's ``$defs.method_settings`` (the keys ``train.method_settings``
  allows, with their types), filled in by snrtune.workflow.schema.load_schema.

``python -m snrtune.training.setting_views --write`` rewrites the two files from the fields; tests/training/
test_settings.py fails, naming the keys that differ, while either file is out of date. Light: no torch.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path
from typing import Any

import yaml

from snrtune.training import settings
from snrtune.training.setting_checks import nullable

REGENERATE = "python -m snrtune.training.setting_views --write"
DEFAULTS_FILE = Path(settings.__file__).parents[1] / "data" / "train_defaults.yaml"
DOCS_FILE = Path(settings.__file__).parents[3] / "docs" / "training.md"  # in a checkout of the repository
TABLE_START = f"<!-- the settings table: generated from TrainingSettings by `{REGENERATE}` -->"
TABLE_END = "<!-- end of the generated settings table -->"
YAML_HEADER = f"""\
# snrtune train: every training setting and its default (the seed Spectrum walk-through's: lr 2e-4, cosine,
# 100 warm-up steps, AdamW betas (0.9, 0.999) eps 1e-8, gradient accumulation 4, 2 epochs).
# GENERATED from the fields of TrainingSettings in src/snrtune/training/settings.py, which hold the defaults
# snrtune uses: edit a setting there and run `{REGENERATE}`.
# A --config YAML overrides any of these keys; an unknown key is an error. Keep a comparison fair by
# giving every method the same file (same data, steps, batch and schedule).
"""
COMMENT_COLUMN = 33
WIDTH = 120


def value_text(value: Any) -> str:
    """A default as YAML writes it and YAML 1.1 reads it back: 2.0e-4 (a float: YAML 1.1 wants the dot), 0.05,
    null, false, cosine."""
    if isinstance(value, float) and value != 0 and abs(value) < 1e-3:
        mantissa, exponent = f"{value:e}".split("e")
        mantissa = mantissa.rstrip("0")
        return f"{mantissa}{'0' if mantissa.endswith('.') else ''}e{int(exponent)}"
    if isinstance(value, float):
        return repr(value)
    return yaml.safe_dump(value, default_flow_style=True).splitlines()[0]


def defaults_yaml(fields=None) -> str:
    """The text of train_defaults.yaml: each setting with its default, its help as a comment, under its section."""
    lines = YAML_HEADER.splitlines()
    for f in fields or settings.setting_fields():
        if f.metadata["section"]:
            lines += ["", f"# {f.metadata['section']}"]
        line = f"{f.name}: {value_text(f.default)}".ljust(COMMENT_COLUMN) + f"# {f.metadata['help']}"
        if len(line) <= WIDTH:
            lines.append(line)
        else:  # a long help goes above its key
            lines += [f"# {text}" for text in textwrap.wrap(f.metadata["help"], WIDTH - 2)]
            lines.append(f"{f.name}: {value_text(f.default)}")
    return "\n".join(lines) + "\n"


def settings_table(fields=None) -> str:
    """docs/training.md's table: key, default, type and range, per method (``train.method_settings``), meaning."""
    rows = ["| key | default | type and range | per method | meaning |", "|---|---|---|---|---|"]
    for f in fields or settings.setting_fields():
        help_text = f.metadata["help"].replace("|", "\\|")
        per_method = "yes" if f.metadata["per_method"] else ""
        rows.append(f"| `{f.name}` | {value_text(f.default)} | {f.metadata['check'].words} | {per_method} | "
                    f"{help_text} |")
    return "\n".join(rows) + "\n"


def method_settings_schema(fields=None) -> dict[str, Any]:
    """The schema of one method's ``train.method_settings`` entry: the per-method settings, each of its check's
    type or null (an overlay's null deletes what an earlier config file set); validate_config then parses each
    value with the setting's own check."""
    properties = {f.name: {**nullable(f.metadata["check"].schema), "description": f.metadata["help"]}
                  for f in fields or settings.setting_fields() if f.metadata["per_method"]}
    return {"type": "object", "additionalProperties": False, "properties": properties}


def learning_rate_schema(fields=None) -> dict[str, Any]:
    """The schema of one learning-rate candidate (``train.learning_rates``): the learning_rate setting's."""
    field = next(f for f in fields or settings.setting_fields() if f.name == "learning_rate")
    return dict(field.metadata["check"].schema)


def docs_table(text: str) -> str:
    """The generated table in docs/training.md's ``text`` (between its markers)."""
    if TABLE_START not in text or TABLE_END not in text:
        raise ValueError(f"{DOCS_FILE} has no generated settings table (markers {TABLE_START!r} ... {TABLE_END!r})")
    return text.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0].strip("\n") + "\n"


def with_table(text: str, table: str) -> str:
    head, rest = text.split(TABLE_START, 1)
    return f"{head}{TABLE_START}\n{table}{TABLE_END}{rest.split(TABLE_END, 1)[1]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m snrtune.training.setting_views",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite train_defaults.yaml and docs/training.md's table")
    args = parser.parse_args(argv)
    docs = DOCS_FILE.read_text(encoding="utf-8")
    stale = [path for path, now, wanted in ((DEFAULTS_FILE, DEFAULTS_FILE.read_text(encoding="utf-8"), defaults_yaml()),
                                            (DOCS_FILE, docs_table(docs), settings_table())) if now != wanted]
    if args.write:
        DEFAULTS_FILE.write_text(defaults_yaml(), encoding="utf-8")
        DOCS_FILE.write_text(with_table(docs, settings_table()), encoding="utf-8")
        print(f"wrote {DEFAULTS_FILE} and the table in {DOCS_FILE}")
        return 0
    for path in stale:
        print(f"{path} is out of date: run `{REGENERATE}`", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
