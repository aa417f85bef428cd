"""Reading and validating a safetensors header without trusting it (no torch, no memory map): snrtune's one
reader of the safetensors format, used by fetch, scan, train, merge and the model-directory checks.

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON header
``{key: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``, then the data.
The checks are the ones the safetensors library applies when it opens a file, so a file that passes
here is one transformers can load, and every tensor's bytes are exactly its own:

- N is below ``MAX_HEADER_BYTES`` and the header fits in the file;
- every entry has a dtype name, a shape of non-negative integers and two integer offsets;
- ``end - begin == numel × dtype size`` (for the dtypes whose size is known);
- sorted by offset, the tensors tile the data area: the first starts at 0, each starts where the
  previous one ended (no overlap, no hole), and the last ends at the end of the file.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from snrtune.errors import SnrtuneError

MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own limit
DTYPE_BITS = {"BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "I16": 16, "U16": 16,
              "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64, "I64": 64, "U64": 64,
              "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a safetensors file, as its (validated) header describes it."""

    key: str
    dtype: str          # the safetensors dtype name, e.g. "BF16"
    shape: tuple[int, ...]
    offset: int         # absolute byte offset of the data in the file
    nbytes: int
    file: Path          # the file that holds it

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def _fail(file: Path, what: str) -> SnrtuneError:
    return SnrtuneError(f"{str(file)!r} is not a valid safetensors file: {what}")


def _entry(file: Path, key: str, info) -> tuple[str, tuple[int, ...], int, int]:
    if not isinstance(info, dict):
        raise _fail(file, f"tensor {key!r} has header entry {info!r}; expected {{dtype, shape, data_offsets}}")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str):
        raise _fail(file, f"tensor {key!r} has dtype {dtype!r}; expected a safetensors dtype name")
    if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
        raise _fail(file, f"tensor {key!r} has shape {shape!r}; expected a list of non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int and o >= 0 for o in offsets)
            and offsets[0] <= offsets[1]):
        raise _fail(file, f"tensor {key!r} has data_offsets {offsets!r}; expected [begin, end] with 0 <= begin <= end")
    bits = DTYPE_BITS.get(dtype)
    numel = math.prod(shape)
    if bits is not None and offsets[1] - offsets[0] != (numel * bits + 7) // 8:
        raise _fail(file, f"tensor {key!r} of shape {shape} and dtype {dtype} needs {(numel * bits + 7) // 8} bytes "
                          f"but its data_offsets {offsets} span {offsets[1] - offsets[0]}")
    return dtype, tuple(shape), offsets[0], offsets[1]


def read_safetensors_header(file: str | os.PathLike) -> tuple[dict[str, TensorEntry], dict]:
    """({key: TensorEntry}, metadata) of one safetensors file, or a one-line SnrtuneError naming the file
    (and the tensor) when the header cannot describe this file's bytes."""
    file = Path(file)
    try:
        size = file.stat().st_size
        with open(file, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise _fail(file, f"{size} bytes, too short for the 8-byte header length")
            n = struct.unpack("<Q", prefix)[0]
            if n > MAX_HEADER_BYTES or n > size - 8:
                raise _fail(file, f"header length {n} exceeds the file ({size} bytes) or the "
                                  f"{MAX_HEADER_BYTES}-byte limit")
            raw = handle.read(n)
    except OSError as exc:
        raise SnrtuneError(f"cannot read {str(file)!r}: {exc.strerror or exc}") from exc
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(file, f"the header is not JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise _fail(file, f"the header is a JSON {type(header).__name__}; expected an object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise _fail(file, "__metadata__ is not an object")
    parsed = {key: _entry(file, key, info) for key, info in header.items()}
    data_start, data_size = 8 + n, size - 8 - n
    position = 0
    for key, (_, _, begin, end) in sorted(parsed.items(), key=lambda item: (item[1][2], item[1][3])):
        if begin != position:
            what = "overlaps the previous tensor" if begin < position else f"leaves a gap of {begin - position} bytes"
            raise _fail(file, f"tensor {key!r} starts at data offset {begin} and {what}")
        if end > data_size:
            raise _fail(file, f"tensor {key!r} ends at data offset {end} but the file holds {data_size} data bytes "
                              f"(truncated?)")
        position = end
    if position != data_size:
        raise _fail(file, f"the tensors cover {position} of the file's {data_size} data bytes")
    entries = {key: TensorEntry(key, dtype, shape, data_start + begin, end - begin, file)
               for key, (dtype, shape, begin, end) in parsed.items()}
    return entries, metadata


# dtypes whose tensors are plain numbers (torch reads their bytes as they are); quantized and 8-bit float
# storage is not
PLAIN_DTYPES = ("F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL")


def torch_dtypes() -> dict:
    """PLAIN_DTYPES as torch dtypes, for reading a tensor's bytes from its offsets (imports torch)."""
    import torch

    return {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
            "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
            "BOOL": torch.bool}


def checkpoint_tensors(files: Iterable[str | os.PathLike]) -> dict[str, TensorEntry]:
    """Every tensor of a checkpoint's files stored in a PLAIN_DTYPES dtype, read from the headers only: the
    checkpoint keys fetch records its parameter table for, and the tensors scan reads."""
    tensors: dict[str, TensorEntry] = {}
    for file in files:
        entries, _ = read_safetensors_header(file)
        tensors.update({key: entry for key, entry in entries.items() if entry.dtype in PLAIN_DTYPES})
    return tensors
