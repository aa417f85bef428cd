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


def build_table(model_dir: str | os.PathLike, checkpoint_keys: Iterable[str],
                trust_remote_code: bool = False) -> dict | None:
    """The table of the model in ``model_dir`` (built on the meta device), or None for an architecture
    transformers cannot build."""
    import torch
    import transformers

    model_dir = Path(model_dir)
    try:
        config = transformers.AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
        with torch.device("meta"):
            model = transformers.AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except Exception as exc:  # an architecture transformers cannot build: keep checkpoint names
        print(f"note: cannot build the model on the meta device ({type(exc).__name__}); using checkpoint names")
        return None
    parameters = {name: list(p.shape) for name, p in model.named_parameters()}
    first_name: dict[int, str] = {}
    tied = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in first_name and first_name[id(param)] != name:
            tied[name] = first_name[id(param)]
        first_name.setdefault(id(param), name)
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
    return {"transformers": _transformers_version(), "config_sha256": _config_digest(model_dir),
            "checkpoint_keys": keys, "parameters": parameters, "tied": tied, "renamed": renamed}


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
    current = {"transformers": _transformers_version(), "config_sha256": _config_digest(model_dir),
               "checkpoint_keys": sorted(checkpoint_keys)}
    if not isinstance(table, dict) or any(table.get(key) != value for key, value in current.items()):
        return None
    return table


def parameter_table(model_dir: str | os.PathLike, checkpoint_keys: Iterable[str],
                    trust_remote_code: bool = False) -> dict | None:
    """The recorded table when valid, else one built now (None for architectures transformers cannot build)."""
    keys = list(checkpoint_keys)
    return load_table(model_dir, keys) or build_table(model_dir, keys, trust_remote_code)
