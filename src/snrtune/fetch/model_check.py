"""The one check of a model directory before anything loads it: fetch, scan, train, merge and evaluate call
``check_model``.

It runs, in order, each failure one line naming the directory or file:

1. the files (snrtune.model_dir.check_model_dir): config.json and the JSON files transformers reads parse, every
   shard the index names is there and whole, every safetensors header is valid, weights are float;
2. the weights against the config (``check_weights_match_config``): the checkpoint's tensor names and shapes are
   those of the model config.json builds on the meta device, from the runtime parameter table
   (snrtune.fetch.params: recorded by fetch in snrtune_params.json while it is current, else built now), with
   tied weights and transformers' checkpoint renamings (and its own ignore patterns) allowed. Without this,
   transformers would initialise missing layers at random and drop extra ones, and say nothing;
3. with ``tokenizer``, the tokenizer (``check_tokenizer``): it loads, its chat template compiles, and its
   vocabulary fits the embedding matrix.

``first_nonfinite`` finds a NaN or infinite weight (evaluate refuses such a model before lm-eval runs).
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from pathlib import Path

from snrtune.errors import SnrtuneError
from snrtune.model_dir import (CONFIG_FILE, TOKENIZER_CONFIG, TOKENIZER_FILES, WEIGHT_DTYPES, check_model_dir,
                               weight_files)
from snrtune.fetch.params import parameter_table
from snrtune.safetensors_header import read_safetensors_header, torch_dtypes

CHAT_TEMPLATE_FILE = "chat_template.jinja"
SHOWN = 3  # names shown per kind of mismatch


def check_model(model_dir: str | os.PathLike, config: bool = True, tokenizer: bool = False,
                trust_remote_code: bool = False, strict: bool = True) -> dict:
    """Check a model directory (module docstring); returns {checkpoint key: TensorEntry}. ``strict``: a config.json
    transformers cannot build is an error (train, merge, evaluate load the model with transformers); scan, which
    reads the weights itself, and fetch keep the checkpoint's names with a note instead."""
    model_dir = Path(model_dir)
    entries = check_model_dir(model_dir, config=config, tokenizer=tokenizer)
    table = None
    if (model_dir / CONFIG_FILE).is_file():
        table = parameter_table(model_dir, list(entries), trust_remote_code, strict=strict)
        if table is not None:
            check_weights_match_config(model_dir, entries, table)
    if tokenizer:
        check_tokenizer(model_dir, (table or {}).get("embedding_rows"))
    return entries


def _ignored(name: str, patterns: list[str]) -> bool:
    return any(re.search(pattern, name) for pattern in patterns)


def _shown(names: list[str]) -> str:
    return ", ".join(names[:SHOWN]) + (", …" if len(names) > SHOWN else "")


def weight_mismatches(entries: dict, table: dict) -> tuple[list[str], list[str], list[tuple[str, list, list]]]:
    """(missing, unexpected, mismatched) between the checkpoint's tensors ``entries`` and the model of the parameter
    ``table``: runtime names no checkpoint tensor provides (tied aliases and the model's ignore patterns excepted),
    checkpoint tensors the model has no place for, and (key, checkpoint shape, model shape) of those whose shapes
    differ. A tensor transformers' conversion mapping fuses with others (Mixtral's per-expert weights) is checked by
    name only."""
    expected = {**table["parameters"], **table.get("buffers", {})}
    tied, renamed = table["tied"], table["renamed"]
    prefix = table.get("base_model_prefix") or ""
    fused = Counter(renamed.values())
    covered: set[str] = set()
    unexpected, mismatched = [], []
    for key, entry in sorted(entries.items()):
        name = renamed.get(key, key)
        if name not in expected and name not in tied and prefix and f"{prefix}.{name}" in expected:
            name = f"{prefix}.{name}"  # a base model's checkpoint (no prefix) in the causal-LM class
        if name in tied:  # a tied alias saved too: it provides its target
            name = tied[name]
        if name not in expected:
            if not _ignored(key, table.get("ignore_unexpected", [])):
                unexpected.append(key)
            continue
        covered.add(name)
        if key in renamed and fused[name] > 1:
            continue
        shape, want = list(entry.shape), list(expected[name])
        if (shape != want) if key not in renamed else (math.prod(shape) != math.prod(want)):
            mismatched.append((key, shape, want))
    missing = [name for name in expected if name not in covered and not _ignored(name, table.get("ignore_missing", []))]
    return missing, unexpected, mismatched


def check_weights_match_config(model_dir: str | os.PathLike, entries: dict, table: dict) -> None:
    """One line naming the missing, unexpected and mismatched tensors when the checkpoint is not the model its
    config.json describes (``weight_mismatches``)."""
    missing, unexpected, mismatched = weight_mismatches(entries, table)
    if not (missing or unexpected or mismatched):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing ({_shown(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({_shown(unexpected)})")
    if mismatched:
        shown = [f"{key} {shape} in the weights, {want} by the config" for key, shape, want in mismatched]
        parts.append(f"{len(mismatched)} of another shape ({_shown(shown)})")
    raise SnrtuneError(f"model directory {str(model_dir)!r}: the weights do not match {CONFIG_FILE} "
                       f"({table.get('architecture') or 'the model it describes'}): {'; '.join(parts)}; expected the "
                       f"checkpoint of this config (transformers would initialise missing weights at random and "
                       f"drop the rest)")


def _tokenizer_files(model_dir: Path) -> str:
    names = [name for name in (*TOKENIZER_FILES, TOKENIZER_CONFIG) if (model_dir / name).is_file()]
    return ", ".join(names) or "no tokenizer files"


def check_tokenizer(model_dir: str | os.PathLike, embedding_rows: int | None = None) -> None:
    """The tokenizer of ``model_dir`` loads (AutoTokenizer), its chat template(s) compile (as transformers compiles
    them), and its largest token id has a row in the embedding matrix (``embedding_rows``, when known)."""
    import transformers

    model_dir = Path(model_dir)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    except Exception as exc:  # a broken tokenizer raises whatever its reader raises (KeyError, ValueError, …)
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise SnrtuneError(f"the tokenizer of {str(model_dir)!r} ({_tokenizer_files(model_dir)}) does not load: "
                           f"{type(exc).__name__}: {first}; expected tokenizer files transformers can read") from None
    check_chat_template(model_dir, getattr(tokenizer, "chat_template", None))
    vocabulary = tokenizer.get_vocab()
    top = max(vocabulary.values()) + 1 if vocabulary else 0
    if embedding_rows is not None and top > embedding_rows:
        raise SnrtuneError(f"the tokenizer of {str(model_dir)!r} has token ids up to {top - 1}, but the embedding "
                           f"matrix of its {CONFIG_FILE} has {embedding_rows} rows; expected the model's own tokenizer")


def check_chat_template(model_dir: Path, template) -> None:
    """Each chat template (a string, or a dict of named ones) compiles with transformers' Jinja environment."""
    from transformers.utils.chat_template_utils import _compile_jinja_template

    templates = template if isinstance(template, dict) else {"default": template} if template else {}
    where = model_dir / CHAT_TEMPLATE_FILE if (model_dir / CHAT_TEMPLATE_FILE).is_file() else model_dir / TOKENIZER_CONFIG
    for name, text in templates.items():
        try:
            _compile_jinja_template(text)
        except Exception as exc:  # jinja2's TemplateSyntaxError, or ImportError without jinja2
            line = f" (line {exc.lineno})" if getattr(exc, "lineno", None) else ""
            which = f" {name!r}" if isinstance(template, dict) else ""
            raise SnrtuneError(f"the chat template{which} in {str(where)!r} is not a valid Jinja template: "
                               f"{getattr(exc, 'message', None) or exc}{line}") from None


def first_nonfinite(model_dir: str | os.PathLike) -> tuple[Path, str, str] | None:
    """(file, tensor, "nan" or "inf") of the first float tensor holding a NaN or an infinity, else None. Reads every
    weight once, a tensor at a time in slices of at most 64 MiB (the offsets from the safetensors header)."""
    import torch

    floats = {name: dtype for name, dtype in torch_dtypes().items() if name in WEIGHT_DTYPES}
    chunk = 64 << 20
    for file in weight_files(model_dir):
        header, _ = read_safetensors_header(file)
        with open(file, "rb") as handle:
            for key, entry in sorted(header.items(), key=lambda item: item[1].offset):
                dtype = floats.get(entry.dtype)
                if dtype is None or entry.nbytes == 0:
                    continue
                size = torch.empty((), dtype=dtype).element_size()
                step = max(size, chunk // size * size)
                for start in range(0, entry.nbytes, step):
                    handle.seek(entry.offset + start)
                    raw = bytearray(handle.read(min(step, entry.nbytes - start)))
                    values = torch.frombuffer(raw, dtype=dtype)
                    if not bool(torch.isfinite(values).all()):
                        return file, key, "nan" if bool(torch.isnan(values).any()) else "inf"
    return None
