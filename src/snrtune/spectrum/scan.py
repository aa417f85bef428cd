"""`snrtune scan MODEL_DIR --out snr.json`: the SNR of every weight matrix, streamed from safetensors.

Tensors are read one group at a time (matrices of equal shape are batched), never the whole model, so
peak memory is about one batch plus its Gram matrices. Parameter names are reported as the model's
``named_parameters()`` gives them (checkpoint keys are renamed with transformers' own conversion
mapping, e.g. Mixtral's per-expert ``w1`` → fused ``mlp.experts.gate_up_proj``), from the parameter table
that ``snrtune fetch`` recorded, or one built on the meta device when there is none (snrtune.fetch.params).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from snrtune import __version__, arguments, criteria
from snrtune.fileio import OWNER_KEY, Owner, atomic_file, json_safe, open_sibling_log, sibling_refusal, write_json
from snrtune.errors import SnrtuneError
from snrtune.fetch.model_check import check_model
from snrtune.model_dir import load_source_info, weight_files
from snrtune.naming import module_name
from snrtune.fetch.params import parameter_table
from snrtune.record import Stopwatch, run_record
from snrtune.safetensors_header import TensorEntry, checkpoint_tensors, torch_dtypes
from snrtune.spectrum.selection_file import load_scan  # noqa: F401 (snr.json's loader, kept importable here)
from snrtune.spectrum.snr import (exact_singular_values, module_type, one_thread, snr_from_singular_values,
                                  svd_singular_values)


PRECISIONS = {"float32": torch.float32, "float64": torch.float64}
DEFAULT_BATCH_MIB = 64.0  # SmolLM2: as fast as 128, 0.41× instead of 0.48× the naive scan's peak memory


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_dir", help="HF model directory with safetensors weights (from `snrtune fetch`)")
    parser.add_argument("--out", required=True, help="output snr.json")
    parser.add_argument("--method", choices=["gram", "svd"], default="gram",
                        help="gram: eigenvalues of the smaller Gram matrix in float64, redone by a float64 SVD where "
                             "a score's error estimate exceeds 1e-4 (fast, default); "
                             "svd: torch.linalg.svdvals in --precision (the reference computation)")
    parser.add_argument("--precision", choices=list(PRECISIONS), default="float32",
                        help="dtype the weights are taken in before the spectrum (default float32, as the reference)")
    parser.add_argument("--device", default="cpu", type=arguments.device,
                        help="torch device for the linear algebra: cpu, cuda, cuda:1 …")
    parser.add_argument("--batch-mib", type=arguments.positive_float, default=DEFAULT_BATCH_MIB,
                        help=f"batch equal-shape matrices up to this many MiB of working memory "
                             f"(default {DEFAULT_BATCH_MIB:g})")
    parser.add_argument("--spectrum-json", default=None,
                        help="also write the reference spectrum tool's format {name: {snr, type}} here")
    parser.add_argument("--resume", action="store_true", help="reuse the matrices finished by an interrupted scan")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow the model's own code when reading its parameter names (off by default)")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing --out (or --spectrum-json) file that this step did not write")
    arguments.output(parser, "file", inputs=("model_dir",),
                     siblings=lambda args, out: [(_partial_path(Path(out)), "file", PARTIAL_SUFFIX)])
    arguments.output(parser, "file", inputs=("model_dir", "--out"), dest="spectrum_json")


def run(args: argparse.Namespace) -> int:
    result = scan(args.model_dir, args.out, method=args.method, precision=args.precision, device=args.device,
                  batch_mib=args.batch_mib, resume=args.resume, spectrum_json=args.spectrum_json,
                  trust_remote_code=args.trust_remote_code, force=args.force)
    statuses = Counter(module["status"] for module in result["modules"])
    ok = statuses.pop("ok", 0)
    unranked = "".join(f", {count} {status}" for status, count in sorted(statuses.items()))
    print(f"scanned {ok} matrices ({len(result['not_scannable'])} not scannable{unranked}) "
          f"in {result['wall_time_s']:.1f}s -> {args.out}")
    return 0


@dataclass(frozen=True)
class Matrix:
    """One checkpoint tensor (or one expert slice of a 3-D tensor) to scan."""

    key: str          # checkpoint key, e.g. model.layers.0.self_attn.q_proj.weight
    file: Path
    shape: tuple[int, ...]
    slice_index: int | None = None

    @property
    def name(self) -> str:
        return module_name(self.key)

    @property
    def matrix_shape(self) -> tuple[int, int]:
        return tuple(self.shape[-2:])  # type: ignore[return-value]

    @property
    def empty(self) -> bool:
        """A tensor with no elements (e.g. 0×8): it has no spectrum and gets status "empty"."""
        return math.prod(self.shape) == 0


TORCH_DTYPES = torch_dtypes()  # safetensors' plain dtypes as torch dtypes


def runtime_names(table: dict | None):
    """(named_parameters {name: shape}, tied {alias: name}, key → runtime-name function) from a parameter
    table (see snrtune.fetch.params); without one, the checkpoint keys are the names."""
    if table is None:
        return None, {}, (lambda key: key)
    renamed = table["renamed"]
    return ({name: tuple(shape) for name, shape in table["parameters"].items()}, table["tied"],
            (lambda key: renamed.get(key, key)))


def plan_matrices(stored: dict[str, TensorEntry]) -> tuple[list[Matrix], list[dict]]:
    """Split checkpoint tensors into matrices to scan (2-D, and 3-D per slice) and 1-D/0-D ones."""
    matrices, skipped = [], []
    for key, info in stored.items():
        if not TORCH_DTYPES[info.dtype].is_floating_point:
            continue
        if len(info.shape) in (2, 3) and math.prod(info.shape) == 0:
            matrices.append(Matrix(key, info.file, info.shape))  # listed with status "empty", never computed
        elif len(info.shape) == 2:
            matrices.append(Matrix(key, info.file, info.shape))
        elif len(info.shape) == 3:
            matrices.extend(Matrix(key, info.file, info.shape, index) for index in range(info.shape[0]))
        else:
            skipped.append({"key": key, "shape": list(info.shape),
                            "reason": "1-D weight has no spectrum" if len(info.shape) == 1 else f"{len(info.shape)}-D tensor"})
    return matrices, skipped


def batches(matrices: list[Matrix], batch_mib: float) -> list[list[Matrix]]:
    """Groups of equal-shape matrices, each within ``batch_mib`` of float64 working memory."""
    by_shape: dict[tuple[int, int], list[Matrix]] = defaultdict(list)
    for matrix in matrices:
        by_shape[matrix.matrix_shape].append(matrix)
    groups = []
    for (n, m), members in by_shape.items():
        # stored float32 copy + a float64 row chunk and its transpose + float64 Gram and eigen workspace
        per_matrix = 4 * n * m + 16 * min(max(n, m), 2048) * min(n, m) + 16 * min(n, m) ** 2
        size = max(1, int(batch_mib * 2**20 // per_matrix))
        groups.extend(members[i:i + size] for i in range(0, len(members), size))
    return groups


def load_batch(group: list[Matrix], stored: dict[str, TensorEntry], dtype: torch.dtype) -> torch.Tensor:
    """Read a group's matrices straight into one (B, n, m) tensor with plain file reads.

    No memory map: its touched pages would count as resident memory for the whole scan.
    """
    first = stored[group[0].key]
    batch = torch.empty((len(group), *group[0].matrix_shape), dtype=TORCH_DTYPES[first.dtype])
    raw = batch.view(torch.uint8).view(len(group), -1)
    for i, matrix in enumerate(group):
        info = stored[matrix.key]
        if info.dtype != first.dtype:
            raise SnrtuneError(f"tensors of one shape have different dtypes ({matrix.key}): re-save the model")
        offset = info.offset + (matrix.slice_index or 0) * raw.shape[1]
        with open(info.file, "rb") as handle:
            handle.seek(offset)
            if handle.readinto(raw[i].numpy()) != raw.shape[1]:
                raise SnrtuneError(f"{str(info.file)!r} is truncated (tensor {matrix.key})")
    return batch if batch.dtype == dtype else batch.to(dtype)


def compute_group(weights: torch.Tensor, method: str, dtype: torch.dtype, device: str, scored=None) -> list[dict]:
    """Entries for a (B, n, m) batch: the SNR and its parts and every spectral criterion's score (``scored``:
    default every one in snrtune.criteria), each within 1e-4 of the exact value (gram: see
    snrtune.spectrum.snr.exact_singular_values); non-finite matrices are reported, not ranked."""
    scored = criteria.spectral() if scored is None else scored
    n, m = weights.shape[-2:]
    finite = torch.isfinite(weights.flatten(1).sum(1))  # a NaN or inf makes the sum non-finite: one pass, no mask
    for index in torch.nonzero(~finite).flatten().tolist():  # or a huge finite sum: check those exactly
        finite[index] = all(bool(torch.isfinite(rows).all()) for rows in weights[index].split(2048))
    results: list[dict] = [{"status": "nonfinite"} for _ in range(weights.shape[0])]
    if finite.any():
        good = (weights if bool(finite.all()) else weights[finite]).to(device)  # no copy in the usual case
        if method == "gram":
            singular, computed_in = exact_singular_values(good, scored)
        else:
            singular = svd_singular_values(good, dtype)
            computed_in = [str(dtype).removeprefix("torch.")] * good.shape[0]
        singular = singular.double().cpu()
        with one_thread():
            parts = {k: v for k, v in snr_from_singular_values(singular, n, m).items() if k != "sigma"}
            scores = {c.name: c.function()(singular, n, m).double() for c in scored}
        for j, index in enumerate(torch.nonzero(finite).flatten().tolist()):
            values = {k: float(v[j]) for k, v in parts.items()}
            if all(math.isfinite(value) for value in values.values()):
                own = {name: float(v[j]) if math.isfinite(float(v[j])) else None for name, v in scores.items()}
                results[index] = {"status": "ok", **values, **own, "computed_in": computed_in[j]}
            else:  # finite weights whose spectrum overflowed (e.g. --method svd in float32 near 3e38)
                results[index] = {"status": "nonfinite_snr", "computed_in": computed_in[j]}
    return results


def entry_for(matrix: Matrix, values: dict, to_runtime) -> dict:
    kind, layer, expert = module_type(matrix.name)
    if matrix.slice_index is not None:
        expert = matrix.slice_index
    n, m = matrix.matrix_shape
    entry = {"name": matrix.name, "param": to_runtime(matrix.key), "type": kind, "layer": layer, "expert": expert,
             "shape": [n, m], "n_params": 0 if matrix.empty else n * m}
    for key in ("snr", "s_max", "signal", "noise", "threshold", *score_keys(), "computed_in"):
        entry[key] = values.get(key)
    entry["status"] = values["status"]
    return entry


def score_keys() -> tuple[str, ...]:
    """The snr.json keys of the spectral criteria's scores besides the SNR (kappa, alpha, …)."""
    return tuple(c.name for c in criteria.spectral() if c.name != "snr")


PARTIAL_SUFFIX = ".partial.jsonl"
OWNER = Owner("scan")


def _partial_path(out: Path) -> Path:
    return out.with_name(out.name + PARTIAL_SUFFIX)


def _partial_entry(line: str) -> tuple[tuple[str, int | None], dict]:
    """One finished matrix of a resume file: ((key, slice), values); ValueError when the line is not one."""
    entry = json.loads(line)
    if not (isinstance(entry, dict) and isinstance(entry.get("key"), str)
            and (entry.get("slice") is None or type(entry.get("slice")) is int)
            and isinstance(entry.get("values"), dict) and isinstance(entry["values"].get("status"), str)):
        raise ValueError("expected an object with key, slice and values")
    return (entry["key"], entry["slice"]), entry["values"]


def _load_partial(path: Path, settings: dict) -> dict[tuple[str, int | None], dict]:
    """The matrices an interrupted scan finished. A last line cut by the interruption is dropped; a file
    that is not a scan resume file (unreadable, another format, a bad line before the last) is named in one
    line and the scan starts afresh (docs/checks.md)."""
    if not path.is_file():
        return {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        header = json.loads(lines[0]) if lines else None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        print(f"note: --resume: {path} is not a scan resume file ({type(exc).__name__} in line 1); starting afresh")
        return {}
    if not isinstance(header, dict) or {k: v for k, v in header.items() if k != OWNER_KEY} != settings:
        print(f"note: {path} was made with other settings; starting afresh")
        return {}
    done = {}
    for number, line in enumerate(lines[1:], start=2):
        try:
            key, values = _partial_entry(line)
        except (json.JSONDecodeError, ValueError) as exc:
            if number == len(lines):  # a line cut by the interruption
                break
            reason = "not JSON" if isinstance(exc, json.JSONDecodeError) else str(exc)
            print(f"note: --resume: {path} line {number} is corrupt ({reason}); starting afresh")
            return {}
        done[key] = values
    return done


def scan(model_dir: str | os.PathLike, out: str | os.PathLike, method: str = "gram", precision: str = "float32",
         device: str = "cpu", batch_mib: float = DEFAULT_BATCH_MIB, resume: bool = False, spectrum_json: str | None = None,
         trust_remote_code: bool = False, force: bool = False) -> dict:
    """Scan every matrix of ``model_dir`` and write ``out`` (see docs/artifacts.md for the format); ``force``
    replaces an ``out`` (or ``spectrum_json``) file this step did not write."""
    if method not in ("gram", "svd"):
        raise SnrtuneError(f"unknown scan method {method!r}: expected gram or svd")
    if precision not in PRECISIONS:
        raise SnrtuneError(f"unknown precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    arguments.check_device_present(device)
    stopwatch = Stopwatch()
    model_dir, out = Path(model_dir), Path(out)
    partial = _partial_path(out)
    reason = sibling_refusal(partial, "file", OWNER.sibling(PARTIAL_SUFFIX), "--out's resume file")
    if reason:
        raise SnrtuneError(reason)
    # every shard the index names, valid headers, float weights, the weights its config.json describes (from the
    # recorded parameter table while it is current: no transformers import)
    check_model(model_dir, config=False, trust_remote_code=trust_remote_code, strict=False)
    source = load_source_info(model_dir)
    shapes = checkpoint_tensors(weight_files(model_dir))
    matrices, skipped = plan_matrices(shapes)
    dtype = PRECISIONS[precision]

    scored = criteria.spectral()
    settings = {"model_dir": str(model_dir.resolve()), "method": method, "precision": precision,
                "criteria": [c.name for c in scored]}
    done = _load_partial(partial, settings) if resume else {}
    with open_sibling_log(partial, OWNER.sibling(PARTIAL_SUFFIX), settings) as log:
        for (key, index), values in done.items():
            log.write(json.dumps({"key": key, "slice": index, "values": values}) + "\n")
        for matrix in matrices:
            if matrix.empty:
                done[(matrix.key, matrix.slice_index)] = {"status": "empty"}
        todo = [mx for mx in matrices if (mx.key, mx.slice_index) not in done]
        with tqdm(total=len(matrices), initial=len(matrices) - len(todo), desc="SNR scan", unit="matrix") as bar:
            for group in batches(todo, batch_mib):
                weights = load_batch(group, shapes, dtype)
                for matrix, values in zip(group, compute_group(weights, method, dtype, device, scored)):
                    done[(matrix.key, matrix.slice_index)] = values
                    log.write(json.dumps({"key": matrix.key, "slice": matrix.slice_index, "values": values}) + "\n")
                log.flush()
                del weights
                bar.update(len(group))

    # after the scan loop, with the loop's freed buffers handed back to the OS first, so the model
    # code's memory does not add to the scan's working set
    _release_freed_memory()
    params, tied, to_runtime = runtime_names(parameter_table(model_dir, shapes, trust_remote_code))
    modules = [entry_for(mx, done[(mx.key, mx.slice_index)], to_runtime) for mx in matrices]
    modules += tied_aliases(modules, tied, shapes)
    modules.sort(key=lambda e: (e["layer"] is None, e["layer"] or 0, e["name"], e["expert"] or 0))
    not_scannable = []
    for item in skipped:
        name = module_name(item["key"])
        kind, layer, _ = module_type(name)
        not_scannable.append({"name": name, "param": to_runtime(item["key"]), "type": kind, "layer": layer,
                              "shape": item["shape"], "reason": item["reason"]})
    if params is None:
        params = {key: info.shape for key, info in shapes.items()}
    result = run_record(
        stopwatch,
        model=source["name"], model_dir=str(model_dir), method=method, precision=precision, device=device,
        dtype=",".join(sorted({str(TORCH_DTYPES[shapes[mx.key].dtype]).removeprefix("torch.") for mx in matrices})),
        snrtune_version=__version__,
        total_params=sum(math.prod(shape) for shape in params.values()),
        parameters={name: list(shape) for name, shape in params.items()},
        tied=tied,
        modules=modules,
        not_scannable=not_scannable,
    )
    write_json(out, json_safe(result), owner=OWNER, force=force)
    if spectrum_json:
        write_spectrum_json(spectrum_json, modules, not_scannable, force=force)
    partial.unlink(missing_ok=True)
    return result


def _release_freed_memory() -> None:
    """glibc keeps freed heap memory in the process; give it back (no-op elsewhere)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def tied_aliases(modules: list[dict], tied: dict[str, str], shapes: dict) -> list[dict]:
    """Entries for tied weights absent from the checkpoint (lm_head = embed_tokens): scanned once, listed twice."""
    by_param = {entry["param"]: entry for entry in modules}
    aliases = []
    for alias, target in tied.items():
        if alias in shapes or target not in by_param:
            continue
        name = module_name(alias)
        kind, layer, expert = module_type(name)
        aliases.append({**by_param[target], "name": name, "param": alias, "type": kind, "layer": layer,
                        "expert": expert, "tied_to": by_param[target]["name"]})
    return aliases


def write_spectrum_json(path: str | os.PathLike, modules: list[dict], not_scannable: list[dict],
                        force: bool = False) -> None:
    """The reference spectrum tool's format: {module_name: {"snr": float, "type": str}}; 1-D weights score 1.0
    (as the reference computes them). Expert slices of fused 3-D tensors are named ``tensor.EXPERT``. The format
    has no room for snrtune's mark, so an existing file is replaced only with ``force``."""
    data = {}
    for entry in modules:
        if entry["status"] != "ok":
            continue
        is_slice = entry["expert"] is not None and module_type(entry["name"])[2] is None
        name = f"{entry['name']}.{entry['expert']}" if is_slice else entry["name"]
        data[name] = {"snr": entry["snr"], "type": entry["type"]}
    for entry in not_scannable:
        data[entry["name"]] = {"snr": 1.0, "type": entry["type"]}
    with atomic_file(path, owner=Owner("scan", "--spectrum-json"),
                     force=force) as handle:
        json.dump(dict(sorted(data.items(), key=lambda item: item[1]["type"])), handle, indent=2, allow_nan=False)
        handle.write("\n")


