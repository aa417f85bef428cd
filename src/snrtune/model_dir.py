"""The model directory `snrtune fetch` makes: the file names and formats snrtune adds to a standard
Hugging Face model directory. fetch writes them, params and scan read them; this module imports neither.

- ``snrtune_source.json``: where the model came from, ``{"name", "source", "kind", "revision"}``; ``name``
  is the model's short name in run ids.
- ``snrtune_params.json``: the runtime parameter table (snrtune.fetch.params).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from snrtune.artifacts import write_json

SOURCE_FILE = "snrtune_source.json"
PARAMS_FILE = "snrtune_params.json"
OWN_FILES = (SOURCE_FILE, PARAMS_FILE)  # written afresh for each fetched directory, never linked from a source


def write_source_info(model_dir: str | os.PathLike, name: str, source: str, kind: str,
                      revision: str | None) -> None:
    write_json(Path(model_dir) / SOURCE_FILE, {"name": name, "source": source, "kind": kind, "revision": revision})


def load_source_info(model_dir: str | os.PathLike) -> dict:
    """The ``snrtune_source.json`` of a model directory, or one derived from its name."""
    path = Path(model_dir) / SOURCE_FILE
    if path.is_file():
        return json.loads(path.read_text())
    return {"name": Path(model_dir).resolve().name, "source": str(model_dir), "kind": "local", "revision": None}
