"""The model directory `snrtune fetch` makes: the file names and formats snrtune adds to a standard
Hugging Face model directory. fetch writes them, params and scan read them; this module imports neither.
It also holds the one validation of a model directory and of a run directory that fetch, scan, train, merge
and evaluate run before any model loads (``check_model_dir``, ``check_run_dir``), and the weights
fingerprint a run records of its base model and merge checks (``weights_fingerprint``).

- ``snrtune_source.json``: where the model came from, ``{"name", "source", "kind", "revision"}``; ``name``
  is the model's short name in run ids.
- ``snrtune_params.json``: the runtime parameter table (snrtune.fetch.params).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from snrtune.artifact_names import DELTA_FILE, METRICS_FILE, RUN_FILE
from snrtune.fileio import read_text, write_json
from snrtune.errors import SnrtuneError
from snrtune.safetensors_header import DTYPE_BITS, read_safetensors_header


SOURCE_FILE = "snrtune_source.json"
PARAMS_FILE = "snrtune_params.json"
OWN_FILES = (SOURCE_FILE, PARAMS_FILE)  # written afresh for each fetched directory, never linked from a source


def write_source_info(model_dir: str | os.PathLike, name: str, source: str, kind: str,
                      revision: str | None) -> None:
    write_json(Path(model_dir) / SOURCE_FILE, {"name": name, "source": source, "kind": kind, "revision": revision})


def load_source_info(model_dir: str | os.PathLike) -> dict:
    """The ``snrtune_source.json`` of a model directory, or one derived from its name."""
    path = Path(model_dir) / SOURCE_FILE
    if path.is_file():
        info = read_json_file(path, "model source record")
        if not isinstance(info, dict) or not isinstance(info.get("name"), str) or not info["name"]:
            raise SnrtuneError(f"model source record {str(path)!r}: key 'name' is missing or not a string; expected "
                               f"the {SOURCE_FILE} `snrtune fetch` writes")
        return info
    return {"name": Path(model_dir).resolve().name, "source": str(model_dir), "kind": "local", "revision": None}


# ---------------------------------------------------------------- validation (fetch, scan, train, merge, evaluate)

CONFIG_FILE = "config.json"
GENERATION_CONFIG = "generation_config.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
INDEX_FILE = "model.safetensors.index.json"
# the model's own small files beside its *.safetensors weights: what merge copies of a full fine-tuned run, and
# (with snrtune's SOURCE_FILE and RUN_FILE) what a run's resume fingerprint hashes of its base model
MODEL_FILES = (CONFIG_FILE, GENERATION_CONFIG, INDEX_FILE)
# JSON files transformers reads from a model directory: each must parse where present
JSON_FILES = (CONFIG_FILE, INDEX_FILE, GENERATION_CONFIG, TOKENIZER_CONFIG, "tokenizer.json",
              "special_tokens_map.json", "adapter_config.json")
# a tokenizer is one of these (fast tokenizer.json, sentencepiece, BPE vocab, WordPiece vocab, tiktoken), or any
# other *.model (sentencepiece) or *.tiktoken file
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "tiktoken.model")
# dtypes a weight (a ``*.weight`` / ``*.bias`` tensor) may be stored in: the float types torch computes in.
# Integer tensors are buffers (e.g. position_ids); quantized or 8-bit float checkpoints are not supported.
WEIGHT_DTYPES = ("F64", "F32", "F16", "BF16")
WEIGHT_SUFFIXES = (".weight", ".bias")


def read_json_file(path: str | os.PathLike, what: str = "file") -> Any:
    """A JSON file's content, or a one-line SnrtuneError naming the file (missing, not UTF-8, not JSON)."""
    path = Path(path)
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SnrtuneError(f"{what} {str(path)!r} is not valid JSON: {exc.msg} at line {exc.lineno} "
                           f"column {exc.colno}") from None


def weight_files(model_dir: str | os.PathLike) -> list[Path]:
    """The safetensors files that hold the model: the shards the index names (each must exist), else every
    ``*.safetensors`` file of the directory."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise SnrtuneError(f"model directory {str(model_dir)!r} not found")
    index = model_dir / INDEX_FILE
    if index.is_file():
        weight_map = _weight_map(index)
        files = [model_dir / name for name in dict.fromkeys(weight_map.values())]
        for file in files:
            if not file.is_file():
                key = next(k for k, v in weight_map.items() if v == file.name)
                raise SnrtuneError(f"{str(index)!r} names shard {file.name!r} (tensor {key!r}, …) but "
                                   f"{str(file)!r} does not exist: the model directory is incomplete")
        return files
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise SnrtuneError(f"{str(model_dir)!r} has no *.safetensors weights (run `snrtune fetch` first)")
    return files


def _weight_map(index: Path) -> dict[str, str]:
    content = read_json_file(index, "weight index")
    weight_map = content.get("weight_map") if isinstance(content, dict) else None
    if not (isinstance(weight_map, dict) and weight_map
            and all(isinstance(v, str) and v and "/" not in v for v in weight_map.values())):
        raise SnrtuneError(f"weight index {str(index)!r}: key 'weight_map' is missing or not an object of "
                           f"tensor name -> shard file name")
    return weight_map


def check_model_dir(model_dir: str | os.PathLike, config: bool = True, tokenizer: bool = False) -> dict:
    """Validate a model directory before any model loads; returns {checkpoint key: TensorEntry}.

    Checked, each failure one line naming the file: the directory exists; config.json exists (unless
    ``config`` is False) and every JSON file transformers reads parses; with ``tokenizer``, tokenizer files
    exist; every shard the index names exists and holds the tensors the index puts there; every safetensors
    header is valid (snrtune.safetensors_header); every dtype is a safetensors dtype and every
    weight (``*.weight``/``*.bias``) is stored in a float dtype of WEIGHT_DTYPES.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise SnrtuneError(f"model directory {str(model_dir)!r} not found")
    if config and not (model_dir / CONFIG_FILE).is_file():
        raise SnrtuneError(f"{str(model_dir)!r} is not a model directory: it has no {CONFIG_FILE}")
    for name in JSON_FILES:
        if (model_dir / name).is_file():
            content = read_json_file(model_dir / name)
            if not isinstance(content, dict):
                raise SnrtuneError(f"{str(model_dir / name)!r} holds a JSON {type(content).__name__}; expected an "
                                   f"object")
    if tokenizer and not (any((model_dir / name).is_file() for name in TOKENIZER_FILES)
                          or any(model_dir.glob("*.tiktoken")) or any(model_dir.glob("*.model"))):
        raise SnrtuneError(f"{str(model_dir)!r} has no tokenizer files (expected one of "
                           f"{', '.join(TOKENIZER_FILES)}): fetch or merge the model with its tokenizer")
    entries: dict = {}
    for file in weight_files(model_dir):
        header, _ = read_safetensors_header(file)
        for key, entry in header.items():
            if entry.dtype not in DTYPE_BITS:
                raise SnrtuneError(f"{str(file)!r}: tensor {key!r} has dtype {entry.dtype!r}, which is not a "
                                   f"safetensors dtype")
            if key.endswith(WEIGHT_SUFFIXES) and entry.dtype not in WEIGHT_DTYPES:
                raise SnrtuneError(f"{str(file)!r}: weight {key!r} is stored as {entry.dtype}; expected a float "
                                   f"dtype ({', '.join(WEIGHT_DTYPES)}): quantized checkpoints are not supported")
            entries[key] = entry
    index = model_dir / INDEX_FILE
    if index.is_file():
        missing = [key for key in _weight_map(index) if key not in entries]
        if missing:
            raise SnrtuneError(f"{str(index)!r} names {len(missing)} tensor(s) its shards do not hold, e.g. "
                               f"{missing[0]!r} in {_weight_map(index)[missing[0]]!r}: the model directory is incomplete")
    return entries


def weights_fingerprint(model_dir: str | os.PathLike) -> str:
    """sha256 of a model's weights from every tensor's name, dtype and shape and three 4 KiB samples of its
    bytes (start, middle, end): at most 12 KiB read per tensor (under 9 MiB for Llama-3-70B's 723 tensors),
    never the whole weights. Copies of a model agree (names and bytes, not
    file times); another model of the same shapes, or a fine-tuned one, differs in the sampled bytes."""
    import hashlib

    digest = hashlib.sha256()
    block = 4096
    tensors = []
    for file in weight_files(model_dir):
        header, _ = read_safetensors_header(file)
        tensors += [(key, file, entry) for key, entry in header.items()]
    handles: dict[Path, Any] = {}
    try:
        for key, file, entry in sorted(tensors, key=lambda item: item[0]):
            handle = handles.get(file) or handles.setdefault(file, open(file, "rb"))
            digest.update(json.dumps([key, entry.dtype, list(entry.shape)]).encode())
            starts = sorted({0, max(0, entry.nbytes // 2 - block // 2), max(0, entry.nbytes - block)})
            for start in starts:
                handle.seek(entry.offset + start)
                digest.update(handle.read(min(block, entry.nbytes - start)))
    finally:
        for handle in handles.values():
            handle.close()
    return digest.hexdigest()


RUN_KEYS = ("id", "model", "method")  # what every snrtune_run.json names


def read_run_record(path: str | os.PathLike) -> dict:
    """A snrtune_run.json: a JSON object with string ``id``, ``model`` and ``method``; one line otherwise."""
    record = read_json_file(path, "run record")
    if not isinstance(record, dict):
        raise SnrtuneError(f"run record {str(path)!r} holds a JSON {type(record).__name__}; expected an object")
    for key in RUN_KEYS:
        if not isinstance(record.get(key), str) or not record[key]:
            raise SnrtuneError(f"run record {str(path)!r}: key {key!r} is {record.get(key)!r}; expected a string "
                               f"(a snrtune_run.json from `snrtune train`)")
    return record


def check_run_dir(run_dir: str | os.PathLike) -> dict:
    """Validate a finished run directory from `snrtune train` before merge loads anything; returns its
    snrtune_run.json. Its run record and metrics.json parse, the method is known, and the weights its merge
    strategy needs are there and whole: spectrum_delta.safetensors,
    adapter_model.safetensors + adapter_config.json, or a complete model directory (``check_model_dir``)."""
    from snrtune import method_registry

    run_dir = Path(run_dir)
    if not (run_dir / RUN_FILE).is_file():
        raise SnrtuneError(f"{str(run_dir)!r} has no {RUN_FILE}; expected a finished run directory from "
                           f"`snrtune train`")
    identity = read_run_record(run_dir / RUN_FILE)
    spec = method_registry.get(identity["method"])
    if not isinstance(read_json_file(run_dir / METRICS_FILE, "run metrics"), dict):
        raise SnrtuneError(f"{str(run_dir / METRICS_FILE)!r} is not a JSON object; expected the run's metrics")
    if spec.merge == "spectrum-delta":
        needed = [DELTA_FILE]
    elif spec.merge == "adapter":
        needed = ["adapter_config.json", "adapter_model.safetensors"]
    else:
        check_model_dir(run_dir)
        return identity
    for name in needed:
        if not (run_dir / name).is_file():
            raise SnrtuneError(f"run directory {str(run_dir)!r} ({identity['method']}) has no {name}: the run is "
                               f"incomplete")
        if name.endswith(".safetensors"):
            read_safetensors_header(run_dir / name)
        elif not isinstance(read_json_file(run_dir / name), dict):
            raise SnrtuneError(f"{str(run_dir / name)!r} is not a JSON object")
    return identity
