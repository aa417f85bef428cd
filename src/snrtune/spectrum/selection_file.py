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
import re
from pathlib import Path
from typing import Any

import jsonschema

from snrtune import criteria, method_registry
from snrtune.artifact_names import COMPAT_STATS_SUFFIX
from snrtune.errors import SnrtuneError
from snrtune.fileio import parse_yaml, read_text
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
        "modules": {"type": "array", "items": {"type": "object", "properties": {
            "name": {"type": "string"}, "param": {"type": "string"},
            "shape": {"type": ["array", "null"], "items": {"type": "integer", "minimum": 0}}}}},
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
    sel = parse_yaml(read_text(path, "selection file"), what)
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
    """A parsed selection checked against the schema (the fields ``method`` needs included), each pattern, module
    and target module listed once, and its criterion against snrtune.criteria (``lowest``, an older name, reads as
    lowest-snr)."""
    what = f"selection file {str(path)!r}"
    _validate(sel, selection_schema(method), what)
    lists = {"unfrozen_parameters": sel["unfrozen_parameters"],
             "modules": [m.get("name") if m.get("expert") is None else f"{m.get('name')} (expert {m['expert']})"
                         for m in sel.get("modules") or []],
             "exports.peft.target_modules": ((sel.get("exports") or {}).get("peft") or {}).get("target_modules") or []}
    for key, items in lists.items():
        seen: dict = {}
        for index, item in enumerate(items):
            if item is not None and item in seen:
                raise SnrtuneError(f"{what}: key '{key}[{index}]' repeats {item!r} (also at [{seen[item]}]); expected "
                                   f"each once (a module listed twice would be trained and counted twice)")
            seen.setdefault(item, index)
    if "selection" in sel:
        if criteria.find(sel["selection"]) is None:
            raise SnrtuneError(f"{what}: key 'selection': {sel['selection']!r} is not one of "
                               f"{', '.join(criteria.names())}")
        sel["selection"] = criteria.canonical(sel["selection"])
    return sel


def check_selection_kind(sel: dict, path, method: str) -> None:
    """A method trains a selection of its own kind (``method_registry.get(method).selection_kind``, e.g. a control's
    random modules); the selection file's ``selection`` key (absent in the reference YAML: snr) must say so."""
    wanted = method_registry.get(method).selection_kind
    made = sel.get("selection", "snr")
    if wanted is not None and made != wanted:
        raise SnrtuneError(f"selection file {str(path)!r}: key 'selection' is {made!r} but method {method!r} trains "
                           f"a {wanted!r} selection; expected a selection of its kind")


def pattern_hits(pattern: str, parameters: dict[str, list[int]], tied: dict[str, str]) -> set[str]:
    """The parameters (their canonical names: a tied alias counts as its target) whose runtime name ``pattern``
    matches (``re.match``, as training applies it)."""
    regex = re.compile(pattern)
    names = list(parameters) + [alias for alias in tied if alias not in parameters]
    return {tied.get(name, name) for name in names if regex.match(name)}


def check_selection_fits(sel: dict, path, method: str, parameters: dict[str, list[int]], tied: dict[str, str],
                         allow_every_parameter: bool = False) -> None:
    """Before the model loads, a selection against the model's runtime parameters (``parameters``: name → shape,
    tied aliases in ``tied``): every pattern matches a parameter; the recorded modules are the model's, of the
    recorded shapes; the patterns' parameter count is ``trainable_params``; a LoRA method's target modules are
    the model's; and a selection that makes every parameter trainable (a full fine-tune under another name) needs
    ``allow_every_parameter``."""
    what = f"selection file {str(path)!r}"
    spec = method_registry.get(method)
    names = list(parameters) + [alias for alias in tied if alias not in parameters]
    matched: set[str] = set()
    for index, pattern in enumerate(sel["unfrozen_parameters"]):
        hits = pattern_hits(pattern, parameters, tied)
        if not hits:
            raise SnrtuneError(f"{what}: key 'unfrozen_parameters[{index}]': {pattern!r} matches no parameter of the "
                               f"model (e.g. {names[0]!r}); expected patterns for its named_parameters() names")
        matched |= hits
    for index, module in enumerate(sel.get("modules") or []):
        param, shape = module.get("param"), module.get("shape")
        if param is None:
            continue
        have = parameters.get(tied.get(param, param))
        if have is None:
            raise SnrtuneError(f"{what}: key 'modules[{index}].param': {param!r} is not a parameter of the model; "
                               f"expected a selection from this model's scan")
        if isinstance(shape, list) and list(shape) != list(have[-len(shape):]):
            raise SnrtuneError(f"{what}: key 'modules[{index}].shape': {shape} but the model's {param!r} is {have}; "
                               f"expected a selection from this model's scan")
    if not spec.is_adapter:
        trainable = sum(math.prod(parameters[name]) for name in matched)
        stated = sel.get("trainable_params")
        if stated is not None and stated != trainable:
            raise SnrtuneError(f"{what}: key 'trainable_params' is {stated} but its patterns make {trainable} "
                               f"parameters of the model trainable; expected the two to agree (was it made for this "
                               f"model?)")
        if matched == set(parameters) and not allow_every_parameter:
            raise SnrtuneError(f"{what}: its unfrozen_parameters make every parameter of the model trainable "
                               f"({trainable}): that is method 'full', not {method!r}; expected a selection of some "
                               f"modules, or --allow-every-parameter to train it anyway")
    for index, module in enumerate(((sel.get("exports") or {}).get("peft") or {}).get("target_modules") or []):
        if spec.is_adapter and f"{module}.weight" not in parameters and f"{module}.weight" not in tied:
            raise SnrtuneError(f"{what}: key 'exports.peft.target_modules[{index}]': {module!r} is not a module of "
                               f"the model with a weight; expected module names like "
                               f"{next(iter(parameters)).removesuffix('.weight')!r}")


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
