"""Writing outputs so that a failed step never leaves something that looks finished.

Every step writes into a temporary sibling and renames it into place only when complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import yaml


def _umask_mode(mode: int) -> int:
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


def _replace_path(tmp: Path, final: Path) -> None:
    if final.is_dir() and not final.is_symlink():
        shutil.rmtree(final)
    elif final.exists() or final.is_symlink():
        final.unlink()
    os.replace(tmp, final)


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike, keep_partial: bool = False) -> Iterator[Path]:
    """Yield a temporary directory next to ``final``; rename it to ``final`` on success.

    On an exception the temporary directory is removed (or kept as ``<final>.partial`` when
    ``keep_partial`` is set, for steps that resume) and ``final`` is left untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if keep_partial:
        tmp = final.with_name(final.name + ".partial")
        tmp.mkdir(exist_ok=True)
    else:
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        os.chmod(tmp, _umask_mode(0o777))  # mkdtemp makes 0700; the result is an ordinary directory
    try:
        yield tmp
    except BaseException:
        if not keep_partial:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    _replace_path(tmp, final)


@contextlib.contextmanager
def atomic_file(final: str | os.PathLike, mode: str = "w") -> Iterator[Any]:
    """Open a temporary file next to ``final``; it replaces ``final`` only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.tmp-", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, _umask_mode(0o666))  # mkstemp makes 0600; the result is an ordinary file
    try:
        with open(tmp, mode, encoding=None if "b" in mode else "utf-8") as handle:
            yield handle
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, final)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_file(path) as handle:
        json.dump(obj, handle, indent=2, allow_nan=False)
        handle.write("\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


class _PlainDumper(yaml.SafeDumper):
    """A YAML dumper that writes repeated objects in full instead of as &anchors/*aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def write_yaml(path: str | os.PathLike, obj: Any, header: str = "") -> None:
    """Write ``obj`` as block-style YAML (keys in insertion order, no aliases), atomically."""
    with atomic_file(path) as handle:
        if header:
            handle.write(header)
        yaml.dump(obj, handle, Dumper=_PlainDumper, sort_keys=False, default_flow_style=False, width=120)


def read_yaml(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)
