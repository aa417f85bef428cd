"""Safetensors files written byte by byte (8-byte header length, JSON header, data), so tests can make
the corrupt files that the safetensors library refuses to write."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch

ROWS, COLS = 6, 4
MATRIX_BYTES = ROWS * COLS * 4  # one float32 6×4 matrix


def matrix_bytes(seed: int) -> bytes:
    torch.manual_seed(seed)
    return torch.randn(ROWS, COLS).numpy().tobytes()


def write_raw(path: Path, header: dict | list | str, data: bytes, header_len: int | None = None) -> Path:
    """Write ``header`` (JSON-encoded unless already a string) and ``data``; ``header_len`` overrides the
    8-byte length field."""
    raw = (header if isinstance(header, str) else json.dumps(header)).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if header_len is None else header_len) + raw + data)
    return path


def two_matrices(q_offsets=(0, MATRIX_BYTES), k_offsets=(MATRIX_BYTES, 2 * MATRIX_BYTES), q_shape=(ROWS, COLS)):
    """A header for q_proj and k_proj of layer 0, both F32 6×4, with the given offsets."""
    return {"__metadata__": {"format": "pt"},
            "model.layers.0.self_attn.q_proj.weight": {"dtype": "F32", "shape": list(q_shape),
                                                       "data_offsets": list(q_offsets)},
            "model.layers.0.self_attn.k_proj.weight": {"dtype": "F32", "shape": [ROWS, COLS],
                                                       "data_offsets": list(k_offsets)}}


GOOD_DATA = matrix_bytes(0) + matrix_bytes(1)

# name: (header, data, header_len override, words the one-line error must contain)
CORRUPT = {
    "shape disagrees with data_offsets": (two_matrices(q_shape=(ROWS, 2)), GOOD_DATA, None,
                                          ["q_proj", "needs 48 bytes", "span 96"]),
    "overlapping offsets": (two_matrices(k_offsets=(MATRIX_BYTES - 8, 2 * MATRIX_BYTES - 8)), GOOD_DATA[:-8], None,
                            ["overlaps"]),
    "offsets beyond the file": (two_matrices(), GOOD_DATA[:-10], None, ["k_proj", "truncated"]),
    "hole between tensors": (two_matrices(k_offsets=(MATRIX_BYTES + 4, 2 * MATRIX_BYTES + 4)), GOOD_DATA + b"\0" * 4,
                             None, ["k_proj", "gap of 4 bytes"]),
    "trailing bytes": (two_matrices(), GOOD_DATA + b"\0" * 16, None, ["cover 192 of the file's 208"]),
    "header length 2^62": (two_matrices(), GOOD_DATA, 2**62, ["header length 4611686018427387904"]),
    "header length past the end": (two_matrices(), GOOD_DATA, 10_000, ["header length 10000 exceeds"]),
    "header not JSON": ("{not json" + " " * 20, GOOD_DATA, None, ["not JSON"]),
    "3-byte file": (None, b"abc", None, ["3 bytes, too short"]),
    "header a list": ([1, 2], b"", None, ["JSON list"]),
    "negative offset": (two_matrices(q_offsets=(-96, 0)), GOOD_DATA, None, ["data_offsets [-96, 0]"]),
    "shape with a string": (two_matrices(q_shape=(ROWS, "4")), GOOD_DATA, None, ["shape [6, '4']"]),
}


def write_corrupt(path: Path, case: str) -> Path:
    header, data, header_len, _ = CORRUPT[case]
    if header is None:
        path.write_bytes(data)
        return path
    return write_raw(path, header, data, header_len)
