"""Two questions every step asks of its environment and its sources, answered in one place: are we offline
(the Hugging Face hub may not be reached), and is this source a local path (else a hub id)?

Light (no torch, no huggingface_hub import): the workflow imports it while Snakemake parses the Snakefile.
"""

from __future__ import annotations

import os
from pathlib import Path

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
TRUE_VALUES = ("1", "ON", "YES", "TRUE")  # huggingface_hub's rule for its boolean environment variables


def offline_variables() -> list[str]:
    """The offline variables that are set (to 1/on/yes/true, as huggingface_hub reads them)."""
    return [v for v in OFFLINE_VARIABLES if os.environ.get(v, "").strip().upper() in TRUE_VALUES]


def offline() -> bool:
    return bool(offline_variables())


def is_local(source: str | os.PathLike) -> bool:
    """A source that names an existing file or directory here (anything else is read as a hub id)."""
    return Path(source).exists()
