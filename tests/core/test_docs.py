"""Docs that cannot go stale: every config key, training key and repository path they name exists.

Conventions the docs follow (and these tests enforce):
- a workflow config key is written backticked and dotted from a top-level key of the schema, with
  upper-case placeholders for names the user chooses: `evaluate.limit`, `models.NAME.resources.train_gpus`;
- the training keys are the first column of the table in docs/training.md's "Config keys" section, and a
  setting shown with its value is written backticked as `key: value`;
- a repository path starts with a top-level entry of the repository (`src/…`, `docs/…`, `config/…`) or is a
  file of the package written `snrtune/…`; globs must match something, `{placeholders}` are not paths.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from snrtune.training.settings import default_values
from snrtune.workflow.schema import load_schema

ROOT = Path(__file__).parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SCHEMA = load_schema(ROOT / "workflow" / "schemas" / "config.schema.yaml")  # with the filled-in $defs


def tracked_top_level() -> set[str]:
    """Top-level entries of the repository as git tracks them (not .snakemake/, .venv/, results/ of a run)."""
    listing = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if listing.returncode == 0 and listing.stdout:
        return {line.split("/")[0] for line in listing.stdout.splitlines()}
    return {path.name for path in ROOT.iterdir() if not path.name.startswith(".")}  # not a git checkout


TOP_LEVEL = tracked_top_level()


def backticked(text: str) -> list[str]:
    return re.findall(r"`([^`\n]+)`", text)


# --- (a) workflow config keys -------------------------------------------------------------------------------

def resolve(node: dict) -> dict:
    while "$ref" in node:
        node = SCHEMA["$defs"][node["$ref"].split("/")[-1]]
    return node


def schema_has(key: str) -> bool:
    node = SCHEMA
    for part in key.split("."):
        node = resolve(node)
        if part in node.get("properties", {}):
            node = node["properties"][part]
        elif part.isupper() and isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]  # a name the user chooses: models.NAME
        else:
            return False
    return True


def config_keys(text: str) -> list[str]:
    tops = "|".join(map(re.escape, SCHEMA["properties"]))
    files = r"\.(?:py|md|yaml|yml|json|jsonl|smk|txt|csv|tsv|html|png|zip)"  # report.html is a file, not a key
    return [t for t in backticked(text) if re.fullmatch(rf"(?:{tops})(?:\.[A-Za-z_]+)+", t)
            and not re.search(files + "$", t)]


def test_schema_lookup_accepts_real_keys_and_refuses_typos():
    assert schema_has("evaluate.limit") and schema_has("models.NAME.resources.train_gpus")
    assert not schema_has("evaluate.limt") and not schema_has("models.NAME.resources.gpu")
    assert config_keys("see `train.config` and `scan.py`, `evaluate.limit`") == ["train.config", "evaluate.limit"]


def test_docs_name_config_keys():
    named = [key for doc in DOCS for key in config_keys(doc.read_text(encoding="utf-8"))]
    assert {"evaluate.limit", "models.NAME.resources", "data.train"} <= set(named)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_config_key_in_the_docs_is_in_the_schema(doc):
    missing = [key for key in config_keys(doc.read_text(encoding="utf-8")) if not schema_has(key)]
    assert missing == []


# --- (b) training keys --------------------------------------------------------------------------------------

def training_doc() -> str:
    return (ROOT / "docs" / "training.md").read_text(encoding="utf-8")


def config_keys_table(text: str) -> list[str]:
    section = text.split("## Config keys", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return [key for row in rows for key in backticked(row.split("|")[1])]


def test_the_training_table_lists_exactly_the_keys_of_train_defaults():
    listed = config_keys_table(training_doc())
    assert len(listed) == len(set(listed))
    assert set(listed) == set(default_values())


def test_every_training_setting_shown_with_a_value_exists():
    scalar = r"[a-z_]+: (?:\"[^\"]*\"|[^\s\[{]+)"  # `packing: true`, `fsdp: "full_shard auto_wrap"`; not data rows
    shown = [t.split(":")[0] for t in backticked(training_doc()) if re.fullmatch(scalar, t)]
    assert shown  # e.g. `gradient_checkpointing: true`
    assert [key for key in shown if key not in default_values()] == []


# --- (c) repository paths -----------------------------------------------------------------------------------

def repository_paths(text: str) -> list[str]:
    candidates = backticked(text) + re.findall(r"\]\(([^)\s]+)\)", text)  # `path` and [text](path)
    candidates += re.findall(r"(?<![\w/.`-])((?:docs|src|tests|config|workflow|profiles|scripts|benchmarks|envs)"
                             r"/[\w./*-]*[\w*/])", text)
    out = []
    for token in candidates:
        token = token.split("#")[0]
        if " " in token or "{" in token or "://" in token or not token:
            continue
        if token.startswith("snrtune/"):
            token = "src/" + token
        first = token.split("/")[0]
        if "/" in token and first in TOP_LEVEL or token in TOP_LEVEL:
            out.append(token)
    return list(dict.fromkeys(out))


def exists(path: str) -> bool:
    return any(ROOT.glob(path.rstrip("/"))) if "*" in path else (ROOT / path).exists()


def test_path_finder_sees_backticks_links_and_plain_text():
    text = "see `src/snrtune/a.py`, [x](docs/b.md), docs/c.md, `results/{model}/x`, `MODEL_DIR/snrtune_run.json`"
    assert repository_paths(text) == ["src/snrtune/a.py", "docs/b.md", "docs/c.md"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_repository_path_in_the_docs_exists(doc):
    missing = sorted({p for p in repository_paths(doc.read_text(encoding="utf-8")) if not exists(p)})
    assert missing == []


# --- (d) the front door and the measurements -----------------------------------------------------------------

MEASUREMENTS = ROOT / "docs" / "measurements.md"
DATE = re.compile(r"\b20\d\d-\d\d-\d\d\b")


def figure_rows(text: str) -> list[dict[str, str]]:
    """The rows of every table in ``text`` whose header has a command and a date column, as {column: cell}."""
    rows, header = [], None
    for line in text.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
        elif not all(re.fullmatch(r":?-+:?", cell) for cell in cells) and {"command", "date"} <= set(header):
            rows.append(dict(zip(header, cells)))
    return rows


def test_the_figure_row_finder_reads_the_columns():
    text = ("| figure | command | date |\n|---|---|---|\n| 3 s | `snrtune scan m` | 2026-12-03 |\n\n"
            "| a | b |\n|---|---|\n| 1 | 2 |\n")
    assert figure_rows(text) == [{"figure": "3 s", "command": "`snrtune scan m`", "date": "2026-12-03"}]


def test_every_figure_row_in_measurements_names_a_command_and_a_date():
    rows = figure_rows(MEASUREMENTS.read_text(encoding="utf-8"))
    assert len(rows) >= 20
    unnamed = [row["figure"][:60] for row in rows if not backticked(row["command"])
               or not re.fullmatch(r"20\d\d-\d\d-\d\d", row["date"])]
    assert unnamed == []


@pytest.mark.parametrize("doc", [d for d in DOCS if d != MEASUREMENTS], ids=lambda p: p.name)
def test_dated_figures_live_in_measurements(doc):
    """A measurement with its date is a row of docs/measurements.md; the other docs link to it."""
    dated = [line.strip()[:80] for line in doc.read_text(encoding="utf-8").splitlines() if DATE.search(line)]
    assert dated == []


def test_the_readme_is_the_front_door():
    """Under 200 lines, the two commands exactly as .ci/run runs the tests, and a link to every doc."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) < 200
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if "pytest" in line]
    assert ci == ["bash scripts/install.sh && . .venv/bin/activate && python -m pytest"]
    assert ci[0] in text.splitlines() and "bash scripts/install.sh && . .venv/bin/activate && snakemake --cores 2" \
        in text.splitlines()
    assert [doc.name for doc in DOCS[1:] if f"(docs/{doc.name})" not in text] == []
