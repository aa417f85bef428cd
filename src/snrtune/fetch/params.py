"""The model's runtime parameter table: ``named_parameters()`` names and shapes, tied weights, and the
checkpoint-key → runtime-name renaming of transformers' conversion mapping.

Building it means importing transformers and building the model on the meta device: about 3 s of fixed
cost, more than the whole SNR computation of a small model. ``snrtune fetch`` therefore records the table
in the model directory (``snrtune_params.json``); ``snrtune scan`` reuses it while it still describes the
directory (same config.json, same checkpoint keys, same transformers version) and builds it otherwise.
"""

from __future__ import annotations

import hashlib
import os
from importlib import metadata
from pathlib import Path
from typing import Iterable

from snrtune.errors import SnrtuneError
from snrtune.fileio import read_json, write_json
from snrtune.model_dir import CONFIG_FILE, PARAMS_FILE


def _transformers_version() -> str | None:
    try:
        return metadata.version("transformers")
    except metadata.PackageNotFoundError:
        return None


def _config_digest(model_dir: Path) -> str | None:
    config = model_dir / CONFIG_FILE
    return hashlib.sha256(config.read_bytes()).hexdigest() if config.is_file() else None


TABLE_FORMAT = 2  # 2: also buffers, the ignore patterns, the embedding rows and the architecture


def meta_model(model_dir: str | os.PathLike, trust_remote_code: bool = False):
    """The model config.json describes, built on the meta device (no memory, no weights read)."""
    import torch
    import transformers

    config = transformers.AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)


def _patterns(value) -> list[str]:
    return sorted(value) if value else []


def build_table(model_dir: str | os.PathLike, checkpoint_keys: Iterable[str],
                trust_remote_code: bool = False, strict: bool = False) -> dict | None:
    """The table of the model in ``model_dir`` (built on the meta device), or None for an architecture
    transformers cannot build (with ``strict``, a one-line SnrtuneError naming config.json instead)."""
    model_dir = Path(model_dir)
    try:
        model = meta_model(model_dir, trust_remote_code)
    except Exception as exc:  # an architecture transformers cannot build: keep checkpoint names
        if strict:
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            raise SnrtuneError(f"{str(model_dir / CONFIG_FILE)!r}: transformers cannot build the model it describes "
                               f"({type(exc).__name__}: {first}); expected a config.json transformers "
                               f"{_transformers_version()} can load") from None
        print(f"note: cannot build the model on the meta device ({type(exc).__name__}); using checkpoint names")
        return None
    parameters = {name: list(p.shape) for name, p in model.named_parameters()}
    first_name: dict[int, str] = {}
    tied = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in first_name and first_name[id(param)] != name:
            tied[name] = first_name[id(param)]
        first_name.setdefault(id(param), name)
    every_parameter = set(first_name.values()) | set(tied)
    buffers = {name: list(t.shape) for name, t in model.state_dict().items() if name not in every_parameter}
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping

        transforms = get_model_conversion_mapping(model)
    except Exception:  # older transformers: no renaming
        transforms = []
    keys = sorted(checkpoint_keys)
    renamed = {}
    for key in keys:
        if key in parameters:
            continue
        runtime = key
        for transform in transforms:
            runtime, _ = transform.rename_source_key(runtime)
        if runtime != key:
            renamed[key] = runtime
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    rows = getattr(getattr(embeddings, "weight", None), "shape", [None])[0]
    return {"format": TABLE_FORMAT, "transformers": _transformers_version(), "config_sha256": _config_digest(model_dir),
            "architecture": type(model).__name__, "checkpoint_keys": keys, "parameters": parameters, "tied": tied,
            "renamed": renamed, "buffers": buffers, "base_model_prefix": getattr(model, "base_model_prefix", "") or "",
            "ignore_missing": _patterns(getattr(model, "_keys_to_ignore_on_load_missing", None)),
            "ignore_unexpected": _patterns(getattr(model, "_keys_to_ignore_on_load_unexpected", None)),
            "embedding_rows": int(rows) if rows is not None else None}


def write_table(model_dir: str | os.PathLike, checkpoint_keys: Iterable[str], trust_remote_code: bool = False) -> None:
    """Record the table in ``model_dir`` (nothing when transformers cannot build the model)."""
    table = build_table(model_dir, checkpoint_keys, trust_remote_code)
    if table is not None:
        write_json(Path(model_dir) / PARAMS_FILE, table)


def load_table(model_dir: str | os.PathLike, checkpoint_keys: Iterable[str]) -> dict | None:
    """The recorded table if it still describes ``model_dir``, else None."""
    model_dir = Path(model_dir)
    path = model_dir / PARAMS_FILE
    if not path.is_file():
        return None
    try:
        table = read_json(path)
    except ValueError:
        return None
    current = {"format": TABLE_FORMAT, "transformers": _transformers_version(), "config_sha256": _config_digest(model_dir),
               "checkpoint_keys": sorted(checkpoint_keys)}
    if not isinstance(table, dict) or any(table.get(key) != value for key, value in current.items()):
        return None
    return table


def parameter_table(model_dir: str | os.PathLike, checkpoint_keys: Iterable[str],
                    trust_remote_code: bool = False, strict: bool = False) -> dict | None:
    """The recorded table when valid, else one built now (None for architectures transformers cannot build;
    with ``strict`` an error)."""
    keys = list(checkpoint_keys)
    recorded = load_table(model_dir, keys)
    if recorded is not None:
        return recorded
    # built once per process and directory state: the model check and the scan both ask
    key = (str(Path(model_dir).resolve()), _config_digest(Path(model_dir)), tuple(sorted(keys)), trust_remote_code)
    if key not in _BUILT:
        table = build_table(model_dir, keys, trust_remote_code, strict)
        if table is None:
            return None
        _BUILT[key] = table
    return _BUILT[key]


_BUILT: dict[tuple, dict] = {}
