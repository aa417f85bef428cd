"""Training data checked before any tokenizer or model loads: one-line errors naming file, row and field.

``check_training_data(path, dataset_format, stage, max_rows=None)`` is the one entry point: `snrtune train`
calls it on every row before loading anything, the workflow calls it with ``max_rows`` as a pre-flight
check before any job runs. What it checks, for a local ``.jsonl`` / ``.json`` / ``.parquet`` file:

- the whole file's structure: not empty, valid UTF-8 (the error gives the row and the byte offset), no
  blank lines, one JSON object per line (JSONL) or one array of objects (``.json``), a readable parquet
  file;
- the content of every row (or of the first ``max_rows``): it is an object in the format of the first row
  (``dataset_format: auto``) or the named one, with every text field a string and a response to learn:

  alpaca      ``instruction`` (string), ``output`` (non-empty string); ``input``, ``system``: string or null
  sharegpt    ``conversations``: turns ``{from, value}``, a known ``from``, a string ``value``; one of them a
              response (gpt/assistant) with text
  messages    ``messages``: ``{role, content}``, both strings, the role one of system, user, assistant, tool; one of
              them an ``assistant`` turn with text
  preference  (``stage="dpo"``) ``prompt``, ``chosen``, ``rejected``: non-empty strings or message lists; chosen
              and rejected differ

A hub dataset id is not checked here (nothing is downloaded before the job): its rows get the same
content check with ``check_records`` once loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from snrtune import hub
from snrtune.errors import SnrtuneError

FORMATS = ("alpaca", "sharegpt", "messages")
UNCHECKED = object()  # a row past max_rows: its structure was checked, its content was not
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "chatgpt": "assistant", "bing": "assistant", "bard": "assistant"}
MESSAGE_ROLES = ("system", "user", "assistant", "tool")  # the roles chat templates render


@dataclass(frozen=True)
class DataSummary:
    """What ``check_training_data`` found."""

    source: str               # the path or hub id as given
    kind: str                 # "local" or "hub"
    format: str | None        # alpaca, sharegpt, messages or preference (None: a hub id, not checked)
    rows: int | None          # rows in the file (None: a hub id)
    checked_rows: int         # rows whose content was checked
    sha256: str | None        # of the file's bytes (None: a hub id)
    note: str | None = None


def check_training_data(path: str | os.PathLike, dataset_format: str = "auto", stage: str = "sft",
                        max_rows: int | None = None) -> DataSummary:
    """Check a training data file before anything loads; return a summary or raise a one-line SnrtuneError.

    ``path``: a local .jsonl/.json/.parquet file or a hub dataset id (not checked: the summary says so).
    ``dataset_format``: auto (the first row decides), alpaca, sharegpt or messages; ignored for DPO.
    ``stage``: "sft", or "dpo" for prompt/chosen/rejected rows.
    ``max_rows``: check the content of the first ``max_rows`` rows only (the whole file's structure is
    always checked); None checks every row.
    """
    if hub.data_kind(path) == "hub":
        return DataSummary(str(path), "hub", None, None, 0, None,
                           note="a hub dataset id: not checked locally; its rows are checked once loaded")
    path = Path(path)
    limit = max_rows if max_rows is not None else float("inf")
    digest = hashlib.sha256()
    rows, fmt, checked = 0, None, 0
    for number, row in _rows(path, digest, limit):
        rows += 1
        if row is not UNCHECKED:
            fmt = fmt or row_format(row, dataset_format, stage, _where(path, number))
            check_row(row, fmt, _where(path, number))
            checked += 1
    if rows == 0:
        raise SnrtuneError(f"data file {str(path)!r} is empty; expected one training example per row")
    return DataSummary(str(path), "local", fmt, rows, checked, digest.hexdigest())


def check_records(records: list[dict[str, Any]], dataset_format: str, stage: str, source: str) -> str:
    """Check loaded rows (e.g. of a hub dataset) as a file's are checked; returns the format."""
    if not records:
        raise SnrtuneError(f"data {source!r} has no rows")
    fmt = None
    for number, row in enumerate(records, 1):
        where = f"data {source!r}, row {number}"
        fmt = fmt or row_format(row, dataset_format, stage, where)
        check_row(row, fmt, where)
    return fmt


def read_rows(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every row of a local .json/.jsonl file, with the structure checks of ``check_training_data``."""
    path = Path(path)
    rows = [row for _, row in _rows(path, hashlib.sha256(), float("inf"))]
    if not rows:
        raise SnrtuneError(f"data file {str(path)!r} is empty; expected one training example per row")
    return rows


# ---------------------------------------------------------------- reading

def _where(path: Path, number: int) -> str:
    return f"data file {str(path)!r}, row {number}"


def _rows(path: Path, digest, limit) -> Iterator[tuple[int, Any]]:
    """(row number, parsed row, or UNCHECKED past ``limit``) for every row of the file."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        yield from _parquet_rows(path, digest, limit)
        return
    with open(path, "rb") as handle:
        start = handle.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    if suffix == ".json" and start.startswith(b"["):
        yield from _array_rows(path, digest, limit)
    else:
        yield from _jsonl_rows(path, digest, limit)


def _decode(raw: bytes, where: str, offset: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SnrtuneError(f"{where} is not UTF-8: byte {offset + exc.start} of the file is "
                           f"{raw[exc.start:exc.start + 1].hex()!r}") from exc


def _jsonl_rows(path: Path, digest, limit) -> Iterator[tuple[int, Any]]:
    offset = 0
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            digest.update(raw)
            where = _where(path, number)
            body = raw[3:] if number == 1 and raw.startswith(b"\xef\xbb\xbf") else raw
            text = _decode(body, where, offset + len(raw) - len(body)).strip()
            offset += len(raw)
            if not text:
                raise SnrtuneError(f"{where} is a blank line; expected one JSON object per line")
            if number > limit:
                if not (text.startswith("{") and text.endswith("}")):
                    raise SnrtuneError(f"{where} is not a JSON object; expected one per line")
                yield number, UNCHECKED
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                raise SnrtuneError(f"{where} is not valid JSON: {exc.msg} at column {exc.colno}") from exc
            except RecursionError as exc:
                raise SnrtuneError(f"{where} is nested too deeply to be a training example") from exc
            yield number, row


def _array_rows(path: Path, digest, limit) -> Iterator[tuple[int, Any]]:
    raw = path.read_bytes()
    digest.update(raw)
    body = raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = body[:exc.start].count(b"\n") + 1
        raise SnrtuneError(f"data file {str(path)!r} is not UTF-8: byte {exc.start + len(raw) - len(body)} "
                           f"(line {line}) is {body[exc.start:exc.start + 1].hex()!r}") from exc
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SnrtuneError(f"data file {str(path)!r} is not valid JSON: {exc.msg} at line {exc.lineno} "
                           f"column {exc.colno}") from exc
    except RecursionError as exc:
        raise SnrtuneError(f"data file {str(path)!r} is nested too deeply to be training data") from exc
    if not isinstance(rows, list):
        raise SnrtuneError(f"data file {str(path)!r} holds {_json_type(rows)}; expected an array of "
                           "rows or one JSON object per line")
    for number, row in enumerate(rows, 1):
        yield number, (row if number <= limit else UNCHECKED)


def _parquet_rows(path: Path, digest, limit) -> Iterator[tuple[int, Any]]:
    import pyarrow
    import pyarrow.parquet as pq

    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    try:
        table = pq.ParquetFile(path)
        number = 0
        for batch in table.iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                number += 1
                yield number, (row if number <= limit else UNCHECKED)
    except (pyarrow.ArrowException, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SnrtuneError(f"data file {str(path)!r} is not a readable parquet file: {first}") from exc


# ---------------------------------------------------------------- rows

def _show(value: Any) -> str:
    """A value as JSON on one line, shortened."""
    try:
        text = json.dumps(value, ensure_ascii=True, default=str)
    except (ValueError, RecursionError):
        text = type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def detect_format(record: dict[str, Any]) -> str:
    if "messages" in record:
        return "messages"
    if "conversations" in record:
        return "sharegpt"
    if "instruction" in record and "output" in record:
        return "alpaca"
    raise SnrtuneError(f"cannot detect the data format from columns {sorted(record)}; expected "
                       "'messages', 'conversations' (sharegpt) or 'instruction'+'output' (alpaca)")


def row_format(row: Any, dataset_format: str, stage: str, where: str) -> str:
    """The format every row must follow: preference for DPO, the named one, or the first row's."""
    if stage == "dpo":
        return "preference"
    if dataset_format != "auto":
        if dataset_format not in FORMATS:
            raise SnrtuneError(f"dataset_format {dataset_format!r}; expected auto or one of {', '.join(FORMATS)}")
        return dataset_format
    _object(row, where)
    try:
        return detect_format(row)
    except SnrtuneError as exc:
        raise SnrtuneError(f"{where}: {exc}") from exc


def _object(row: Any, where: str) -> None:
    if not isinstance(row, dict):
        raise SnrtuneError(f"{where} is {_json_type(row)}; expected an object (one training example)")


def _json_type(value: Any) -> str:
    """'an object', 'a string', 'null' …: the JSON name of a parsed value's type, with its article."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), f"a {type(value).__name__}")


def _string(row: dict, key: str, where: str, field: str | None = None, required: bool = True,
            nonempty: bool = False, what: str = "text") -> None:
    field = field or key
    if key not in row:
        if required:
            raise SnrtuneError(f"{where} has no field {field!r} ({what}); its fields are {sorted(map(str, row))}")
        return
    value = row[key]
    if value is None and not required:
        return
    if not isinstance(value, str):
        shown = "" if value is None else f" ({_show(value)})"
        raise SnrtuneError(f"{where}: field {field!r} is {_json_type(value)}{shown}; expected a string ({what})")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise SnrtuneError(f"{where}: field {field!r} holds an unpaired surrogate {value[exc.start]!r} at character "
                           f"{exc.start}; expected valid Unicode text") from exc
    if nonempty and not value.strip():
        raise SnrtuneError(f"{where}: field {field!r} is empty; expected the {what}")


def _turns(row: dict, key: str, where: str) -> list:
    turns = row.get(key)
    if key not in row:
        raise SnrtuneError(f"{where} has no field {key!r}; its fields are {sorted(map(str, row))}")
    if not isinstance(turns, list) or not turns:
        raise SnrtuneError(f"{where}: field {key!r} is {_show(turns)}; expected a non-empty list of turns")
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise SnrtuneError(f"{where}: field '{key}[{i}]' is {_json_type(turn)}; expected an object")
    return turns


def _messages(row: dict, key: str, where: str, need_assistant: bool) -> None:
    turns = _turns(row, key, where)
    for i, turn in enumerate(turns):
        _string(turn, "role", where, f"{key}[{i}].role", what="the speaker")
        if turn["role"] not in MESSAGE_ROLES:
            raise SnrtuneError(f"{where}: field '{key}[{i}].role' is {_show(turn['role'])}; expected one of "
                               f"{', '.join(MESSAGE_ROLES)}")
        _string(turn, "content", where, f"{key}[{i}].content", what="the message")
    if need_assistant and not any(t["role"] == "assistant" and t["content"].strip() for t in turns):
        raise SnrtuneError(f"{where}: field {key!r} has no assistant turn with text; expected a response to learn")


def check_row(row: Any, fmt: str, where: str) -> None:
    """One row against its format; a one-line SnrtuneError naming ``where`` and the field."""
    _object(row, where)
    if fmt == "alpaca":
        _string(row, "instruction", where, what="the prompt")
        _string(row, "input", where, required=False, what="extra prompt text")
        _string(row, "system", where, required=False, what="the system prompt")
        _string(row, "output", where, nonempty=True, what="the response")
    elif fmt == "sharegpt":
        turns = _turns(row, "conversations", where)
        for i, turn in enumerate(turns):
            field = f"conversations[{i}]"
            if not isinstance(turn.get("from"), str) or turn["from"] not in SHAREGPT_ROLES:
                raise SnrtuneError(f"{where}: field '{field}.from' is {_show(turn.get('from'))}; expected one of "
                                   f"{', '.join(SHAREGPT_ROLES)}")
            _string(turn, "value", where, f"{field}.value", what="the message")
        if not any(SHAREGPT_ROLES[t["from"]] == "assistant" and t["value"].strip() for t in turns):
            raise SnrtuneError(f"{where}: field 'conversations' has no gpt/assistant turn with text; expected a "
                               "response to learn")
    elif fmt == "messages":
        _messages(row, "messages", where, need_assistant=True)
    elif fmt == "preference":
        for key in ("prompt", "chosen", "rejected"):
            if isinstance(row.get(key), list):
                _messages(row, key, where, need_assistant=False)
            else:
                _string(row, key, where, nonempty=True, what=f"the {key} text or messages")
        if row["chosen"] == row["rejected"]:
            raise SnrtuneError(f"{where}: fields 'chosen' and 'rejected' are the same; expected a preferred and a "
                               f"rejected response that differ (an equal pair teaches nothing)")
    else:
        raise SnrtuneError(f"data format {fmt!r} is not one of {', '.join(FORMATS)}")


def content_sha256(records: Iterable[Any]) -> str:
    """A hash of loaded rows (a hub dataset's content), independent of how they were stored."""
    digest = hashlib.sha256()
    for row in records:
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False, default=str).encode())
        digest.update(b"\n")
    return digest.hexdigest()
