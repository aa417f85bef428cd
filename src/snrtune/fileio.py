"""Writing outputs so that a failed step never leaves something that looks finished, and no step removes or
overwrites what snrtune did not write, or what another step wrote.

Every step writes into a temporary sibling and renames it into place only when complete. Every output records
which step wrote it and which of its outputs it is (an ``Owner``: ``{"written_by": "snrtune", "snrtune_version",
"step", "output"}``): a directory in ``snrtune_output.json`` (OUTPUT_MARKER), a file in a mark inside it (a JSON
object's top-level key ``snrtune_output``; the first line of a JSON-lines file, an object holding that key; a YAML
file's first line, the comment ``# snrtune_output: {…}``). An existing output is replaced only by the step and output
that wrote it (its re-run), or when it is empty; a file snrtune did not write only with ``--force``; a symbolic link
is never written through. ``check_output`` refuses, before any work, an output path that is the working directory,
an input, or an ancestor or descendant of an input. ``output_lock`` keeps a second process off an output that is
being written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
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

OWNER_KEY = "snrtune_output"  # the mark inside a file snrtune wrote (the marker file's content, in a directory)
YAML_MARK = f"# {OWNER_KEY}: "  # a YAML output's first line
MARK_SCAN_BYTES = 1 << 30  # a JSON file larger than this is not parsed to look for the mark (never snrtune's)


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


# ---------------------------------------------------------------- which step wrote an output

@dataclasses.dataclass(frozen=True)
class Owner:
    """The step (sub-command) and the output of it that a file or directory is: ``Owner("scan", "--out")``,
    ``Owner("select", "--out .stats.json")`` (a sibling derived from ``--out``)."""

    step: str
    output: str = "--out"

    def record(self) -> dict[str, str]:
        return {"written_by": "snrtune", "snrtune_version": __version__, "step": self.step, "output": self.output}

    def sibling(self, suffix: str) -> "Owner":
        return Owner(self.step, f"{self.output} {suffix}")

    def owns(self, mark: Any) -> bool:
        """Whether ``mark`` (a recorded owner) is this step's output: its re-run may replace it."""
        return isinstance(mark, dict) and mark.get("step") == self.step and mark.get("output") == self.output

    def __str__(self) -> str:
        return f"`snrtune {self.step}` ({self.output})"


def _described(mark: dict) -> str:
    if mark.get("step") and mark.get("output"):
        return f"was written by {Owner(str(mark['step']), str(mark['output']))}"
    return "was written by an older snrtune that did not record its step"


def dir_mark(path: str | os.PathLike) -> dict | None:
    """The owner recorded in directory ``path``'s marker; None without one, {} for an unreadable one."""
    marker = Path(path) / OUTPUT_MARKER
    if not marker.is_file():
        return None
    try:
        mark = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return mark if isinstance(mark, dict) else {}


def file_mark(path: str | os.PathLike) -> dict | None:
    """The owner recorded inside file ``path`` (module docstring), or None: no mark, not a regular file, a
    symbolic link (never snrtune's output), not UTF-8 text."""
    path = Path(path)
    if path.is_symlink() or not path.is_file():
        return None
    try:
        with open(path, "rb") as handle:
            lines = [handle.readline(1 << 16).decode("utf-8").strip()]
            while lines[-1].startswith("#") and len(lines) < 8:  # a YAML file's leading comments
                lines.append(handle.readline(1 << 16).decode("utf-8").strip())
        text = lines[0]
    except (OSError, UnicodeDecodeError):
        return None
    try:
        comment = next((line for line in lines if line.startswith(YAML_MARK)), None)
        if comment is not None:
            mark = json.loads(comment[len(YAML_MARK):])
            return mark if isinstance(mark, dict) else None
        if text.startswith("{") and text.endswith("}"):  # a JSON-lines file's first line, or one-line JSON
            line = json.loads(text)
            if isinstance(line, dict) and isinstance(line.get(OWNER_KEY), dict):
                return line[OWNER_KEY]
        if text.startswith("{") and path.stat().st_size <= MARK_SCAN_BYTES:
            whole = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(whole, dict) and isinstance(whole.get(OWNER_KEY), dict):
                return whole[OWNER_KEY]
    except (ValueError, RecursionError, OSError):
        return None
    return None


def _empty(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir()) if path.is_dir() else path.stat().st_size == 0


def _umask_mode(mode: int) -> int:
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


def _resolved(path: str | os.PathLike) -> Path:
    """The absolute path, links resolved; ``~`` is not expanded here (the CLI expands it once, before both the
    checks and the writes: snrtune.arguments.expand_outputs)."""
    return Path(path).resolve()


def _relation(target: Path, other: Path) -> str | None:
    """How the resolved output path ``target`` stands to the resolved path ``other``."""
    if target == other:
        return "is"
    if target in other.parents:
        return "contains"
    if other in target.parents:
        return "is inside"
    return None


def refusal(out: str | os.PathLike, kind: str = "dir", flag: str = "--out", owner: Owner | None = None,
            force: bool = False) -> str | None:
    """Why writing the output ``out`` (a "dir" or a "file") as ``owner``'s output would remove what snrtune did not
    write, or what another step or output wrote; None when it may be written. ``force`` lets a file output replace
    a file snrtune did not write (never a directory, never through a symbolic link)."""
    target, cwd = _resolved(out), Path.cwd().resolve()
    if target == cwd or target in cwd.parents:
        return f"{flag} {out} is the working directory{'' if target == cwd else ' or above it'}; expected a new path"
    path = Path(out)
    if kind == "file":
        if path.is_dir() and not path.is_symlink():
            return f"{flag} {out} is an existing directory; expected a file path"
        if owner is None or not (path.exists() or path.is_symlink()):
            return None
        if path.is_symlink():
            if force:
                return None  # the link itself is replaced, never its target
            return (f"{flag} {out} is a symbolic link; snrtune never writes through one (expected a new path, or "
                    f"--force to replace the link itself)")
        if _empty(path) or force:
            return None
        mark = file_mark(path)
        if owner.owns(mark):
            return None
        why = _described(mark) if mark is not None else "was not written by snrtune (it holds no snrtune_output mark)"
        return (f"{flag} {out} is an existing file that {why}; {owner} replaces only its own output: expected a new "
                f"path, or --force to replace it")
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        return f"{flag} {out} is an existing file; expected a directory path"
    if path.is_dir() and any(path.iterdir()):
        mark = dir_mark(path)
        if mark is None:
            return (f"{flag} {out} is an existing directory not written by snrtune (it has no {OUTPUT_MARKER}); "
                    f"expected a new or empty directory, or one this step wrote")
        if owner is not None and not owner.owns(mark):
            return (f"{flag} {out} is an existing directory that {_described(mark)}; {owner} replaces only its own "
                    f"output: expected a new path")
    return None


def sibling_refusal(path: str | os.PathLike, kind: str, owner: Owner, what: str) -> str | None:
    """Why a sibling a step derives from its output (``OUT.partial``, ``OUT.partial.jsonl``, ``OUT.stats.json``,
    ``OUT.samples.jsonl``; ``what`` names it in the line) may not be created or replaced: it exists and is not
    ``owner``'s (empty ones excepted), it is a symbolic link, or of the other kind. --force does not apply."""
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        return None
    if path.is_symlink():
        return f"{what} {path} is a symbolic link; snrtune never writes through one (remove it by hand)"
    if kind == "dir" and not path.is_dir():
        return f"{what} {path} is a file; expected the directory {owner} keeps there (remove it by hand)"
    if kind == "file" and path.is_dir():
        return f"{what} {path} is a directory; expected the file {owner} writes there (remove it by hand)"
    if _empty(path):
        return None
    mark = dir_mark(path) if kind == "dir" else file_mark(path)
    if owner.owns(mark):
        return None
    why = _described(mark) if mark is not None else "was not written by snrtune"
    return f"{what} {path} exists and {why}; {owner} would replace it: remove it by hand, or choose another --out"


def check_output(out: str | os.PathLike, kind: str = "dir", inputs: list[tuple[str, str]] = (),
                 inside_ok: tuple[str, ...] = (), flag: str = "--out", owner: Owner | None = None,
                 force: bool = False, only_inputs: bool = False) -> None:
    """Refuse, in one line, an output path whose writing could remove or overwrite what snrtune did not
    write, or what another step wrote: the working directory (or above it), an input, an ancestor of an input, a
    descendant of an input directory (except the inputs named in ``inside_ok``), an existing directory or file not
    written by ``owner`` (``refusal``).

    ``inputs``: (label, path) pairs as the user gave them; paths that do not exist (hub ids) are skipped.
    ``only_inputs``: check the relations to the inputs only (a sibling, whose ownership sibling_refusal checks)."""
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
    reason = None if only_inputs else refusal(out, kind, flag, owner, force)
    if reason:
        raise SnrtuneError(reason)


def _mark(directory: Path, owner: Owner) -> None:
    marker = directory / OUTPUT_MARKER
    if marker.is_symlink():  # linked from a source directory (fetch of a local snrtune output)
        marker.unlink()
    write_json(marker, owner.record())


def claim_dir(path: str | os.PathLike, owner: Owner, what: str) -> Path:
    """Create (or take over, when it is ``owner``'s or empty) a working directory a step keeps beside its output
    (`snrtune train`'s RUN_DIR.partial), marked as ``owner``'s."""
    reason = sibling_refusal(path, "dir", owner, what)
    if reason:
        raise SnrtuneError(reason)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    _mark(path, owner)
    return path


def _replace_path(tmp: Path, final: Path) -> None:
    if final.is_dir() and not final.is_symlink():
        shutil.rmtree(final)
    elif final.exists() or final.is_symlink():
        final.unlink()
    os.replace(tmp, final)


def _remove_stale(final: Path, owner: Owner) -> None:
    """Temporary directories an earlier run of the same step left when it was killed (``.NAME.tmp-*`` holding
    ``owner``'s marker): nothing finished, never another step's."""
    for stale in final.parent.glob(f".{final.name}.tmp-*"):
        if stale.is_dir() and not stale.is_symlink() and owner.owns(dir_mark(stale)):
            shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike, owner: Owner, keep_partial: bool = False) -> Iterator[Path]:
    """Yield a temporary directory next to ``final``; rename it to ``final`` on success.

    On an exception the temporary directory is removed (or kept as ``<final>.partial`` when
    ``keep_partial`` is set, for steps that resume) and ``final`` is left untouched. A ``final`` that
    ``refusal`` names (the working directory, a file, a directory another step or the user wrote) is refused
    before the block runs; the result holds OUTPUT_MARKER naming ``owner``.
    """
    reason = refusal(final, "dir", owner=owner)
    if reason:
        raise SnrtuneError(reason)
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if keep_partial:
        tmp = claim_dir(final.with_name(final.name + ".partial"), owner.sibling(".partial"), "--out's partial run")
    else:
        _remove_stale(final, owner)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        os.chmod(tmp, _umask_mode(0o777))  # mkdtemp makes 0700; the result is an ordinary directory
        _mark(tmp, owner)  # a killed run's leftover is known as this step's (_remove_stale)
    try:
        yield tmp
    except BaseException:
        if not keep_partial:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    _mark(tmp, owner)
    _replace_path(tmp, final)


@contextlib.contextmanager
def atomic_file(final: str | os.PathLike, mode: str = "w", owner: Owner | None = None,
                force: bool = False) -> Iterator[Any]:
    """Open a temporary file next to ``final``; it replaces ``final`` only if the block succeeds. A ``final``
    that is an existing directory is refused before the block runs; with ``owner`` (a step's output, not a file
    inside a directory the step is writing) also one ``refusal`` names: another step's file or one snrtune did
    not write (unless ``force``), a symbolic link. The block writes the owner's mark (write_json, write_yaml,
    write_jsonl do)."""
    reason = refusal(final, "file", owner=owner, force=force)
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


def open_sibling_log(path: str | os.PathLike, owner: Owner, first_line: dict) -> Any:
    """A JSON-lines file a step appends to as it works (`snrtune scan`'s OUT.partial.jsonl), created or truncated
    without following a symbolic link, its first line ``first_line`` with ``owner``'s mark."""
    reason = sibling_refusal(path, "file", owner, "--out's resume file")
    if reason:
        raise SnrtuneError(reason)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o666)
    handle = os.fdopen(fd, "w", encoding="utf-8")
    handle.write(json.dumps({**first_line, OWNER_KEY: owner.record()}) + "\n")
    handle.flush()
    return handle


@contextlib.contextmanager
def output_lock(out: str | os.PathLike, flag: str = "--out") -> Iterator[None]:
    """Hold an exclusive lock on output ``out`` (an ``flock`` on the hidden file ``.NAME.lock`` beside it, removed
    afterwards): a second process writing the same output (and its siblings, OUT.partial included) fails in one
    line instead of replacing the first one's work. Released when the process ends, however it ends."""
    import fcntl

    path = Path(out)
    made = [parent for parent in [path.parent, *path.parent.parents] if not parent.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.parent / f".{path.name}.lock"
    for _ in range(5):
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise SnrtuneError(f"{flag} {out} is being written by another snrtune process"
                               f"{f' (pid {holder})' if holder.isdigit() else ''}; expected one writer at a time: "
                               f"wait for it to finish, or choose another {flag}") from None
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino  # not removed by the holder before we locked it
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    else:
        raise SnrtuneError(f"{flag} {out}: cannot take the lock {lock}; expected one writer at a time")
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)
        for parent in made:  # directories made only for the lock stay only if the step wrote into them
            with contextlib.suppress(OSError):
                parent.rmdir()


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


def write_json(path: str | os.PathLike, obj: Any, owner: Owner | None = None, force: bool = False) -> None:
    """Write ``obj`` as indented JSON, atomically; a step's output (``owner``) holds its mark as the first key."""
    if owner is not None:
        obj = {OWNER_KEY: owner.record(), **obj}
    with atomic_file(path, owner=owner, force=force) as handle:
        json.dump(obj, handle, indent=2, allow_nan=False)
        handle.write("\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def mark_line(owner: Owner, yaml_comment: bool = False) -> str:
    """The first line of a JSON-lines output (an object with the owner's mark) or, with ``yaml_comment``, of a
    YAML output (a comment: YAML readers see nothing)."""
    if yaml_comment:
        return YAML_MARK + json.dumps(owner.record()) + "\n"
    return json.dumps({OWNER_KEY: owner.record()}) + "\n"


class _PlainDumper(yaml.SafeDumper):
    """A YAML dumper that writes repeated objects in full instead of as &anchors/*aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def write_yaml(path: str | os.PathLike, obj: Any, header: str = "", owner: Owner | None = None,
               force: bool = False) -> None:
    """Write ``obj`` as block-style YAML (keys in insertion order, no aliases), atomically; a step's output
    (``owner``) has its mark as a comment after the ``header`` comment."""
    with atomic_file(path, owner=owner, force=force) as handle:
        if header:
            handle.write(header)
        if owner is not None:
            handle.write(mark_line(owner, yaml_comment=True))
        yaml.dump(obj, handle, Dumper=_PlainDumper, sort_keys=False, default_flow_style=False, width=120)


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a mapping that states a key twice (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                continue  # PyYAML's own error follows
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice (lines {seen[key].start_mark.line + 1} and "
                    f"{key_node.start_mark.line + 1}); expected each key once", key_node.start_mark)
            seen[key] = key_node
        return super().construct_mapping(node, deep)


def parse_yaml(text: str, what: str) -> Any:
    """YAML text of a user's file (``what`` names it in the line), with every key once; one line otherwise."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.constructor.ConstructorError as exc:
        if exc.problem and "appears twice" in exc.problem:
            raise SnrtuneError(f"{what}: {exc.problem}") from None
        raise SnrtuneError(f"{what} is not valid YAML: {' '.join(str(exc).split())}") from None
    except yaml.YAMLError as exc:
        raise SnrtuneError(f"{what} is not valid YAML: {' '.join(str(exc).split())}") from None


def read_yaml(path: str | os.PathLike, what: str = "YAML file") -> Any:
    """The one reader of the YAML files a user gives (training configs, selections, fsdp_config): UTF-8 text
    (snrtune.fileio.read_text), valid YAML, every key of a mapping once; one line naming the file otherwise."""
    return parse_yaml(read_text(path, what), f"{what} {str(path)!r}")
