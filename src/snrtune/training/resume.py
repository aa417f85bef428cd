"""What `snrtune train --resume` may continue: only an unchanged run, only from a complete checkpoint.

``RUN_DIR.partial/fingerprint.json`` records what defines the run: the effective training settings (with
method, stage, match_params_of), the data's content hash, the selection file's content, the base model
(its config.json, generation config, weight index, snrtune_source.json, snrtune_run.json, and each weight
file's name, size and modification time; the weights themselves are not hashed, as that would read the whole
model on every start) and the snrtune version. A resume whose fingerprint differs starts afresh and says which of these
changed. Keys that only decide where and how often checkpoints are written are left out, so changing them
does not throw a run away.

A checkpoint is complete when the Trainer wrote every file it needs to resume (trainer_state.json, which
it writes last, the model or adapter weights, optimizer.pt, scheduler.pt and the RNG state; DeepSpeed and
FSDP keep their states in global_stepN/ and optimizer_0/ instead) and each is whole: safetensors headers
match the file size, torch .pt files have their zip directory (written at the end).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

from snrtune.artifact_names import FINGERPRINT_FILE, RUN_FILE
from snrtune.model_dir import MODEL_FILES, SOURCE_FILE
from snrtune import __version__
from snrtune.fileio import write_json
from snrtune.errors import SnrtuneError
from snrtune.safetensors_header import read_safetensors_header


FINGERPRINT = FINGERPRINT_FILE
NOT_DEFINING = ("save_steps", "save_total_limit")  # where and how often checkpoints go, not what trains
IDENTITY_FILES = (*MODEL_FILES, SOURCE_FILE, RUN_FILE)  # a base model's small files, hashed by content
PARTS = ("settings", "data", "selection", "model", "snrtune")


def _sha256(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _as_dict(cfg: Any) -> dict[str, Any]:
    if hasattr(cfg, "model_dump"):
        return cfg.model_dump()
    if dataclasses.is_dataclass(cfg):
        return dataclasses.asdict(cfg)
    return dict(cfg)


def model_identity(model_dir: str | Path) -> dict[str, Any]:
    """The base model's small files by content, its weight files by name, size and modification time."""
    model_dir = Path(model_dir)
    small = {name: _file_sha256(model_dir / name) for name in IDENTITY_FILES if (model_dir / name).is_file()}
    weights = {}
    for path in sorted(model_dir.iterdir()):
        if path.suffix in (".safetensors", ".bin", ".pt", ".gguf") and path.is_file():
            stat = path.stat()
            weights[path.name] = [stat.st_size, stat.st_mtime_ns]
    return {"files": small, "weights": weights}


def selection_identity(selection_path: str | Path | None) -> dict[str, str] | None:
    if selection_path is None:
        return None
    path = Path(selection_path)
    files = {"selection": _file_sha256(path)}
    stats = Path(f"{path}.stats.json")
    if stats.is_file():
        files["stats"] = _file_sha256(stats)
    return files


def run_fingerprint(cfg: Any, method: str, stage: str, match_params_of: str | None, data_sha256: str,
                    selection_path: str | Path | None, model_dir: str | Path) -> dict[str, Any]:
    """{"sha256": of everything, "parts": {part: sha256}, "settings": the settings} for fingerprint.json."""
    settings = {k: v for k, v in _as_dict(cfg).items() if k not in NOT_DEFINING}
    settings.update(method=method, stage=stage, match_params_of=match_params_of)
    parts = {"settings": _sha256(settings), "data": data_sha256,
             "selection": _sha256(selection_identity(selection_path)), "model": _sha256(model_identity(model_dir)),
             "snrtune": __version__}
    return {"sha256": _sha256(parts), "parts": parts, "settings": json.loads(json.dumps(settings, default=str))}


def changes(old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    """What differs between two fingerprints, in words ("settings (learning_rate), data")."""
    if not isinstance(old, dict) or not isinstance(old.get("parts"), dict):
        return "everything (no fingerprint recorded)"
    said = []
    for part in PARTS:
        if old["parts"].get(part) == new["parts"][part]:
            continue
        if part == "settings" and isinstance(old.get("settings"), dict):
            keys = sorted(k for k in set(old["settings"]) | set(new["settings"])
                          if old["settings"].get(k) != new["settings"].get(k))
            said.append(f"settings ({', '.join(keys)})" if keys else "settings")
        else:
            said.append("snrtune version" if part == "snrtune" else part)
    return ", ".join(said)


def read_fingerprint(partial: Path) -> dict | None:
    try:
        return json.loads((partial / FINGERPRINT).read_text())
    except (OSError, ValueError):
        return None


def write_fingerprint(partial: Path, fingerprint: dict) -> None:
    partial.mkdir(parents=True, exist_ok=True)
    write_json(partial / FINGERPRINT, fingerprint)


# ---------------------------------------------------------------- checkpoints

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def _whole_torch_file(path: Path) -> bool:
    """torch.save writes a zip whose central directory comes last: a cut file has none."""
    return path.is_file() and zipfile.is_zipfile(path)


def _weights_problem(path: Path) -> str | None:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError):
            return "model.safetensors.index.json is unreadable"
        files = [path / shard for shard in shards]
    else:
        files = [path / name for name in ("model.safetensors", "adapter_model.safetensors") if (path / name).is_file()]
    for file in files:
        if not file.is_file():
            return f"{file.name} is missing"
        try:
            read_safetensors_header(file)
        except SnrtuneError:
            return f"{file.name} is incomplete"
    if files or any(path.glob("global_step*")) or any(path.glob("pytorch_model_fsdp*")):
        return None
    if any(_whole_torch_file(path / name) for name in ("pytorch_model.bin", "adapter_model.bin")):
        return None
    return "no model or adapter weights"


def checkpoint_problem(path: Path) -> str | None:
    """Why a Trainer checkpoint directory cannot be resumed from, or None when it is complete."""
    try:
        state = json.loads((path / "trainer_state.json").read_text())
        if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
            return "trainer_state.json has no global_step"
    except FileNotFoundError:
        return "no trainer_state.json"
    except (OSError, ValueError):
        return "trainer_state.json is unreadable"
    weights = _weights_problem(path)
    if weights:
        return weights
    deepspeed = any(p.is_dir() for p in path.glob("global_step*"))
    fsdp = any(p.is_dir() for p in path.glob("optimizer_*"))
    if not (deepspeed or fsdp):
        if not (_whole_torch_file(path / "optimizer.pt") or (path / "optimizer.bin").is_file()
                or any(path.glob("rank*-of-*-optimizer.pt"))):
            return "optimizer.pt is missing or incomplete"
    if not deepspeed and not _whole_torch_file(path / "scheduler.pt"):
        return "scheduler.pt is missing or incomplete"
    rng = list(path.glob("rng_state*.pth"))
    if not rng or not all(_whole_torch_file(p) for p in rng):
        return "rng_state.pth is missing or incomplete"
    return None


def newest_complete_checkpoint(checkpoints: Path) -> tuple[Path | None, list[str]]:
    """(the highest-numbered complete checkpoint or None, one note per newer incomplete one skipped)."""
    if not checkpoints.is_dir():
        return None, []
    found = sorted(((int(m.group(1)), p) for p in checkpoints.iterdir()
                    if p.is_dir() and (m := _CHECKPOINT.match(p.name))), reverse=True)
    notes = []
    for _, path in found:
        problem = checkpoint_problem(path)
        if problem is None:
            return path, notes
        notes.append(f"--resume: skipping {path.name}, a half-written checkpoint ({problem})")
    return None, notes


def resume_point(partial: Path, fingerprint: dict, resume: bool, is_main: bool) -> tuple[Path | None, list[str]]:
    """(checkpoint to resume from or None, lines to print). Without ``resume``, or when the partial run was
    made with another fingerprint, RUN_DIR.partial is removed (by the main process) and training starts afresh."""
    if not partial.exists():
        return None, ([f"--resume: no checkpoint in {partial / 'checkpoints'}; starting afresh"] if resume else [])
    if not resume:
        if is_main:
            shutil.rmtree(partial)  # a stale partial run: without --resume we start over
        return None, []
    old = read_fingerprint(partial)
    if not old or old.get("sha256") != fingerprint["sha256"]:
        if is_main:
            shutil.rmtree(partial)
        why = (f"was made with different {changes(old, fingerprint)}" if isinstance(old, dict) and "parts" in old
               else "records no fingerprint (an older snrtune made it)")
        return None, [f"--resume: {partial.name} {why}; starting afresh"]
    last, notes = newest_complete_checkpoint(partial / "checkpoints")
    if last is None:
        return None, notes + [f"--resume: no complete checkpoint in {partial / 'checkpoints'}; starting afresh"]
    return last, notes + [f"resuming from {last}"]
