"""Writing outputs so that a failed step never leaves something that looks finished, and no step removes or
overwrites what snrtune did not write.

Every step writes into a temporary sibling and renames it into place only when complete. Every directory a
step writes holds ``snrtune_output.json`` (OUTPUT_MARKER); an existing directory is replaced only when it
holds that marker (or is empty). ``check_output`` refuses, before any work, an output path that is the
working directory, an input, or an ancestor or descendant of an input.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import yaml

from snrtune import __version__
from snrtune.artifact_names import OUTPUT_MARKER
from snrtune.errors import SnrtuneError


def read_text(path: str | os.PathLike, what: str = "file") -> str:
    """A user-given file's UTF-8 text, or a one-line SnrtuneError naming it (a directory, missing, unreadable,
    not UTF-8)."""
    path = Path(path)
    if path.is_dir():
        raise SnrtuneError(f"{what} {str(path)!r} is a directory; expected a file")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SnrtuneError(f"{what} {str(path)!r} does not exist") from None
    except OSError as exc:
        raise SnrtuneError(f"cannot read {what} {str(path)!r}: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SnrtuneError(f"{what} {str(path)!r} is not UTF-8: byte {exc.start} is {raw[exc.start]:02x}") from None


def _umask_mode(mode: int) -> int:
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


def _resolved(path: str | os.PathLike) -> Path:
    return Path(path).expanduser().resolve()


def _relation(target: Path, other: Path) -> str | None:
    """How the resolved output path ``target`` stands to the resolved path ``other``."""
    if target == other:
        return "is"
    if target in other.parents:
        return "contains"
    if other in target.parents:
        return "is inside"
    return None


def written_by_snrtune(path: str | os.PathLike) -> bool:
    """Whether directory ``path`` was written by a snrtune step (it holds the output marker)."""
    return (Path(path) / OUTPUT_MARKER).is_file()


def refusal(out: str | os.PathLike, kind: str = "dir", flag: str = "--out") -> str | None:
    """Why writing the output ``out`` (a "dir" or a "file") would remove what snrtune did not write, or None."""
    target, cwd = _resolved(out), Path.cwd().resolve()
    if target == cwd or target in cwd.parents:
        return f"{flag} {out} is the working directory{'' if target == cwd else ' or above it'}; expected a new path"
    path = Path(out)
    if kind == "file":
        if path.is_dir():
            return f"{flag} {out} is an existing directory; expected a file path"
        return None
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        return f"{flag} {out} is an existing file; expected a directory path"
    if path.is_dir() and any(path.iterdir()) and not written_by_snrtune(path):
        return (f"{flag} {out} is an existing directory not written by snrtune (it has no {OUTPUT_MARKER}); "
                f"expected a new or empty directory, or one snrtune wrote")
    return None


def check_output(out: str | os.PathLike, kind: str = "dir", inputs: list[tuple[str, str]] = (),
                 inside_ok: tuple[str, ...] = (), flag: str = "--out") -> None:
    """Refuse, in one line, an output path whose writing could remove or overwrite what snrtune did not
    write: the working directory (or above it), an input, an ancestor of an input, a descendant of an input
    directory (except the inputs named in ``inside_ok``), an existing directory not written by snrtune
    (``kind="dir"``), an existing directory where a file is expected (``kind="file"``).

    ``inputs``: (label, path) pairs as the user gave them; paths that do not exist (hub ids) are skipped."""
    target, cwd = _resolved(out), Path.cwd().resolve()
    if target == cwd or target in cwd.parents:
        raise SnrtuneError(refusal(out, kind, flag))
    for label, value in inputs:
        if value is None or not Path(value).exists():
            continue
        relation = _relation(target, _resolved(value))
        if relation is None or (relation == "is inside" and label in inside_ok):
            continue
        if relation == "is inside" and not Path(value).is_dir():
            continue
        raise SnrtuneError(f"{flag} {out} {relation} the input {label} {value}; expected a path outside the inputs")
    reason = refusal(out, kind, flag)
    if reason:
        raise SnrtuneError(reason)


def _mark(directory: Path) -> None:
    marker = directory / OUTPUT_MARKER
    if marker.is_symlink():  # linked from a source directory (fetch of a local snrtune output)
        marker.unlink()
    write_json(marker, {"written_by": "snrtune", "snrtune_version": __version__})


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
    ``keep_partial`` is set, for steps that resume) and ``final`` is left untouched. A ``final`` that
    ``refusal`` names (the working directory, a file, a directory snrtune did not write) is refused before
    the block runs; the result holds OUTPUT_MARKER.
    """
    reason = refusal(final, "dir")
    if reason:
        raise SnrtuneError(reason)
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
    _mark(tmp)
    _replace_path(tmp, final)


@contextlib.contextmanager
def atomic_file(final: str | os.PathLike, mode: str = "w") -> Iterator[Any]:
    """Open a temporary file next to ``final``; it replaces ``final`` only if the block succeeds. A
    ``final`` that is an existing directory is refused before the block runs."""
    reason = refusal(final, "file")
    if reason:
        raise SnrtuneError(reason)
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


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, ±inf; also numpy and torch scalars) replaced by None:
    JSON has no NaN, and a reader tests ``is None`` (a diverged run's losses, a matrix without an SNR)."""
    if isinstance(obj, dict):
        return {key: json_safe(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(value) for value in obj]
    if isinstance(obj, float) or type(obj).__name__ in ("float16", "float32", "float64"):
        return float(obj) if math.isfinite(obj) else None
    return obj


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
