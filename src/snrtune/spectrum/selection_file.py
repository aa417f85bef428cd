"""The one loader of selection YAMLs (sel.yaml from `snrtune select`) and SNR files (snr.json from
`snrtune scan`): train, merge, select and report read them here.

Each file is checked against a JSON schema (jsonschema, Draft 2020-12) before anything uses it: UTF-8, valid
YAML/JSON, the types of the keys snrtune reads, a non-empty list of patterns that compile (``re``), a t in
(0, 100], integer parameter counts, and the fields a method needs (a LoRA method on a selection needs
``exports.peft.target_modules``). A failure is one line naming the file and the key:
    selection file 'sel.yaml': key 'top_percent': 150 is greater than the maximum of 100
``check_selection_model`` then refuses a selection made for another model (its ``model`` name or
``total_params`` differ from the model directory's), before the model loads.
"""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from snrtune import criteria, method_registry
from snrtune.artifact_names import COMPAT_STATS_SUFFIX
from snrtune.errors import SnrtuneError
from snrtune.fileio import read_text
from snrtune.model_dir import read_json_file

_STRINGS = {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}}
_COUNT = {"type": "integer", "minimum": 1}

SELECTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["unfrozen_parameters"],
    "properties": {
        "unfrozen_parameters": {**_STRINGS, "items": {"type": "string", "minLength": 1, "format": "regex"}},
        "trainable_params": {"type": ["integer", "null"], "minimum": 1},  # null: not known (a reference YAML)
        "total_params": {"type": ["integer", "null"], "minimum": 1},
        "top_percent": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 100},
        "budget_params": {"type": ["integer", "null"], "minimum": 1},
        "model": {"type": ["string", "null"]},
        "selection": {"type": "string"},  # a criterion of snrtune.criteria: checked in check_selection
        "seed": {"type": ["integer", "null"]},
        "types": {"type": "array", "items": {"type": "string"}},
        "modules": {"type": "array", "items": {"type": "object"}},
        "exports": {"type": "object", "properties": {
            "peft": {"type": "object", "properties": {"target_modules": _STRINGS}}}},
    },
}
# a LoRA method on a selection (laser-qlora) puts its adapters on exports.peft.target_modules
ADAPTER_FIELDS = {"required": ["exports"], "properties": {"exports": {
    "required": ["peft"], "properties": {"peft": {"required": ["target_modules"]}}}}}

_MODULE = {"type": "object", "required": ["name", "param", "type", "layer", "expert"],  # what select reads
           "properties": {"name": {"type": "string"}, "param": {"type": "string"}, "type": {"type": "string"},
                          "layer": {"type": ["integer", "null"]}, "expert": {"type": ["integer", "null"]},
                          "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                          "snr": {"type": ["number", "null"]}, "status": {"type": "string"},
                          "tied_to": {"type": "string"}}}
SNR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["modules", "parameters", "total_params"],
    "properties": {
        "model": {"type": ["string", "null"]},
        "modules": {"type": "array", "items": _MODULE},
        "parameters": {"type": "object", "additionalProperties": {
            "type": "array", "items": {"type": "integer", "minimum": 0}}},
        "total_params": _COUNT,
        "tied": {"type": "object", "additionalProperties": {"type": "string"}},
        "not_scannable": {"type": "array", "items": {"type": "object", "required": ["name", "type"]}},
    },
}


def _key(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _validate(data: Any, schema: dict, what: str) -> None:
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(data), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        error = errors[0]
        path, message = list(error.absolute_path), error.message
        if error.validator == "format":
            message = f"{error.instance!r} is not a regular expression Python can compile"
        elif error.validator == "required" and isinstance(error.instance, dict):
            missing = next(name for name in error.validator_value if name not in error.instance)
            path, message = path + [missing], "is missing (required)"
        raise SnrtuneError(f"{what}: key {_key(path)!r}: {message}")


def selection_schema(method: str | None = None) -> dict:
    """SELECTION_SCHEMA with the fields ``method`` needs."""
    spec = method_registry.get(method) if method else None
    if spec is None or not (spec.is_adapter and spec.needs_selection):
        return SELECTION_SCHEMA
    schema = copy.deepcopy(SELECTION_SCHEMA)
    schema["allOf"] = [ADAPTER_FIELDS]
    return schema


def load_selection(path: str | os.PathLike | None, method: str | None = None) -> dict | None:
    """A checked sel.yaml (None for no path). A ``select --compat spectrum`` YAML takes its counts from the
    ``.stats.json`` beside it."""
    if path is None:
        return None
    path = Path(path)
    what = f"selection file {str(path)!r}"
    if not path.exists():
        raise SnrtuneError(f"{what} does not exist; expected a sel.yaml from `snrtune select`")
    text = read_text(path, "selection file")
    try:
        sel = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SnrtuneError(f"{what} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(sel, dict):
        raise SnrtuneError(f"{what} holds {'nothing' if sel is None else 'a ' + type(sel).__name__}; expected a "
                           f"mapping with 'unfrozen_parameters' (a sel.yaml from `snrtune select`)")
    stats = Path(f"{path}{COMPAT_STATS_SUFFIX}")  # `select --compat spectrum` keeps its counts beside the YAML
    if "trainable_params" not in sel and stats.is_file():
        counts = read_json_file(stats, "selection counts")
        if not isinstance(counts, dict):
            raise SnrtuneError(f"selection counts {str(stats)!r} are not a JSON object")
        sel = {**counts, **sel}
    return check_selection(sel, path, method)


def check_selection(sel: Any, path, method: str | None = None) -> dict:
    """A parsed selection checked against the schema (the fields ``method`` needs included) and its criterion
    against snrtune.criteria (``lowest``, an older name, reads as lowest-snr)."""
    _validate(sel, selection_schema(method), f"selection file {str(path)!r}")
    if "selection" in sel:
        if criteria.find(sel["selection"]) is None:
            raise SnrtuneError(f"selection file {str(path)!r}: key 'selection': {sel['selection']!r} is not one of "
                               f"{', '.join(criteria.names())}")
        sel["selection"] = criteria.canonical(sel["selection"])
    return sel


def check_selection_model(sel: dict, path, model_name: str, total_params: int | None) -> None:
    """A selection made for another model is refused: its ``model`` (when recorded) must be the model
    directory's name, its ``total_params`` (when recorded) the model's parameter count."""
    what = f"selection file {str(path)!r}"
    if sel.get("model") not in (None, model_name):
        raise SnrtuneError(f"{what}: key 'model' is {sel['model']!r} but the model being trained is "
                           f"{model_name!r}; expected a selection from this model's scan")
    if total_params is not None and sel.get("total_params") not in (None, total_params):
        raise SnrtuneError(f"{what}: key 'total_params' is {sel['total_params']} but model {model_name!r} has "
                           f"{total_params} parameters; expected a selection from this model's scan")


def load_scan(path: str | os.PathLike) -> dict:
    """A checked snr.json (the output of `snrtune scan`)."""
    path = Path(path)
    what = f"SNR file {str(path)!r}"
    if not path.exists():
        raise SnrtuneError(f"{what} not found (run `snrtune scan` first)")
    try:
        data = json.loads(read_text(path, "SNR file"))
    except json.JSONDecodeError as exc:
        raise SnrtuneError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or "modules" not in data or "parameters" not in data:
        raise SnrtuneError(f"{str(path)!r} is not an snrtune scan (no 'modules'/'parameters'): "
                           f"expected the output of `snrtune scan`")
    return check_scan(data, path)


def check_scan(data: Any, path) -> dict:
    """A parsed snr.json checked against the schema."""
    what = f"SNR file {str(path)!r}"
    _validate(data, SNR_SCHEMA, what)
    bad = [m["name"] for m in data["modules"] if isinstance(m.get("snr"), float) and not math.isfinite(m["snr"])]
    if bad:
        raise SnrtuneError(f"{what}: module {bad[0]!r} has a non-finite 'snr'; expected a number or null")
    return data
