"""`snrtune fetch SOURCE --out DIR`: a standard Hugging Face model directory from a hub id, a local
directory or a GGUF file (also one shipped inside an installed Python package, ``pkg://pkg/file.gguf``).

The result always holds config.json, safetensors weights, the tokenizer, ``snrtune_source.json`` and, for
architectures transformers can build, the runtime parameter table ``snrtune_params.json`` (snrtune.fetch.params).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
from pathlib import Path

from snrtune import hub
from snrtune import arguments
from snrtune.artifact_names import OUTPUT_MARKER
from snrtune.fileio import Owner, atomic_dir
from snrtune.errors import SnrtuneError
from snrtune.fetch.model_check import check_model
from snrtune.model_dir import CONFIG_FILE, OWN_FILES, write_source_info
from snrtune.naming import check_model_name, model_slug


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
WEIGHT_PATTERNS = ["*.safetensors", "*.safetensors.index.json"]
PICKLE_PATTERNS = ["*.bin", "*.bin.index.json"]
SIDE_PATTERNS = ["*.json", "*.model", "*.txt", "*.tiktoken", "*.py", "*.jinja"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="hub id (org/name), local model directory, GGUF file, or pkg://PACKAGE/FILE.gguf")
    parser.add_argument("--out", required=True, help="output model directory (created atomically)")
    parser.add_argument("--revision", default=None, help="hub revision (branch, tag or commit)")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="accept *.bin (pickle) weights when no safetensors exist; they are converted to safetensors")
    parser.add_argument("--name", default=None, help="short model name for run ids (default: derived from SOURCE)")
    parser.add_argument("--copy", action="store_true", help="copy a local directory instead of symlinking its files")
    arguments.output(parser, "dir", inputs=("source",))


def run(args: argparse.Namespace) -> int:
    out = fetch(args.source, args.out, revision=args.revision, allow_pickle=args.allow_pickle,
                name=args.name, copy=args.copy)
    print(f"model directory: {out}")
    return 0


def classify(source: str) -> tuple[str, Path | str]:
    """Return ('gguf'|'local'|'hub', resolved path or hub id) or raise a clear error."""
    if source.startswith("pkg://"):
        path = hub.resolve_package_path(source)
    else:
        path = Path(source).expanduser()
    if path.exists():
        if path.is_file():
            if path.suffix.lower() == ".gguf":
                return "gguf", path
            raise SnrtuneError(f"unsupported model file {str(path)!r}: expected a .gguf file or a model directory")
        if not (path / CONFIG_FILE).is_file():
            raise SnrtuneError(f"{str(path)!r} is not a model directory: it has no config.json")
        return "local", path
    if not source.startswith("pkg://") and HUB_ID.match(source) and not source.startswith((".", "/")):
        return "hub", source
    raise SnrtuneError(f"model source {source!r} not found: expected an existing directory, a .gguf file, "
                       f"pkg://PACKAGE/FILE, or a hub id like org/name")


def default_name(kind: str, resolved: Path | str) -> str:
    """The short name of a source (its hub name, file stem or directory name), as a valid model name."""
    if kind == "hub":
        return model_slug(str(resolved).split("/")[-1])
    path = Path(resolved)
    if kind == "gguf":
        # SmolLM2-135M-Instruct.Q4_1.gguf -> SmolLM2-135M-Instruct
        return model_slug(re.sub(r"[.-](Q\d\w*|F16|F32|BF16|IQ\d\w*)$", "", path.stem, flags=re.IGNORECASE))
    return model_slug(path.name)


def fetch(source: str, out: str | os.PathLike, revision: str | None = None, allow_pickle: bool = False,
          name: str | None = None, copy: bool = False) -> Path:
    """Materialize ``source`` as a model directory at ``out``; nothing is left at ``out`` on failure."""
    kind, resolved = classify(source)
    if revision is not None and kind != "hub":
        what = "a local directory" if kind == "local" else "a GGUF file"
        raise SnrtuneError(f"--revision {revision!r} applies to a hub id, but {source!r} is {what}; expected no "
                           f"--revision (a local source has no revisions)")
    if name is not None:
        check_model_name(name, "--name")
    out = Path(out)
    if kind == "local" and any(Path(resolved).glob("*.safetensors")):
        check_model(resolved, tokenizer=True, strict=False)  # errors name the source's own files
    with atomic_dir(out, Owner("fetch")) as tmp:
        if kind == "gguf":
            gguf_to_hf(Path(resolved), tmp)
        elif kind == "local":
            link_local(Path(resolved), tmp, allow_pickle=allow_pickle, copy=copy)
        else:
            download_hub(str(resolved), tmp, revision=revision, allow_pickle=allow_pickle)
        if not list(tmp.glob("*.safetensors")):
            raise SnrtuneError(f"{source!r} yielded no safetensors weights")
        check_model(tmp, tokenizer=True, strict=False)  # complete shards, valid headers, float weights, the
        # weights its config.json describes, a tokenizer that loads with a chat template that compiles
        write_source_info(tmp, name or default_name(kind, resolved), source, kind, revision)
        record_parameter_table(tmp)
    return out


def record_parameter_table(model_dir: Path) -> None:
    """Write the runtime parameter table (snrtune.fetch.params) so scans need not import transformers."""
    from snrtune.fetch.params import write_table
    from snrtune.model_dir import weight_files
    from snrtune.safetensors_header import checkpoint_tensors

    write_table(model_dir, checkpoint_tensors(weight_files(model_dir)))


def gguf_to_hf(path: Path, out: Path) -> None:
    """Dequantize a GGUF file to float32 and save it as a standard safetensors model directory.

    A GGUF-loaded model keeps its quantizer attached and refuses ``save_pretrained``, so a fresh model
    is built from the config and given the dequantized state dict.
    """
    import torch
    import transformers

    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        loaded = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                                   dtype=torch.float32)
    except ImportError as exc:
        raise SnrtuneError(f"reading GGUF {str(path)!r} needs the gguf package: pip install gguf ({exc})") from exc
    except (ValueError, OSError, KeyError) as exc:
        raise SnrtuneError(f"cannot read GGUF file {str(path)!r}: {exc}".splitlines()[0]) from exc
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    fresh = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    missing = [key for key in missing if key not in _tied_keys(fresh)]
    if missing or unexpected:
        raise SnrtuneError(f"GGUF {str(path)!r} does not match its config: missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]}")
    fresh.generation_config = loaded.generation_config
    fresh.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _tied_keys(model) -> set[str]:
    tied = getattr(model, "all_tied_weights_keys", None) or getattr(model, "_tied_weights_keys", None) or {}
    return set(tied) if not isinstance(tied, dict) else set(tied.keys())


def link_local(src: Path, out: Path, allow_pickle: bool, copy: bool) -> None:
    """Symlink (or copy) a local model directory's files; pickle weights only with ``allow_pickle``."""
    has_safetensors = any(src.glob("*.safetensors"))
    has_pickle = any(src.glob("*.bin"))
    if not has_safetensors and not has_pickle:
        raise SnrtuneError(f"{str(src)!r} is not a model directory: no *.safetensors weights")
    if not has_safetensors:
        if not allow_pickle:
            raise SnrtuneError(f"{str(src)!r} has only pickle (*.bin) weights: pass --allow-pickle to convert them")
        resave_as_safetensors(src, out)
        return
    for item in sorted(src.iterdir()):
        ours = item.name in OWN_FILES or item.name == OUTPUT_MARKER  # written afresh for the new directory
        if ours or item.name.startswith(".") or item.suffix == ".bin" or item.is_dir():
            continue
        if copy:
            shutil.copy2(item, out / item.name)
        else:
            (out / item.name).symlink_to(item.resolve())


def resave_as_safetensors(src: Path, out: Path) -> None:
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(src, dtype="auto")
    model.save_pretrained(out)
    transformers.AutoTokenizer.from_pretrained(src).save_pretrained(out)


def download_hub(repo_id: str, out: Path, revision: str | None, allow_pickle: bool) -> None:
    """Download a hub snapshot (safetensors only unless ``allow_pickle``); token from HF_TOKEN."""
    import huggingface_hub

    token = os.environ.get("HF_TOKEN") or None
    if "HF_HUB_OFFLINE" in hub.offline_variables():
        raise SnrtuneError(f"cannot download {repo_id!r}: HF_HUB_OFFLINE is set (unset it, or pass a local "
                           f"model directory)")
    try:
        files = huggingface_hub.list_repo_files(repo_id, revision=revision, token=token)
        patterns = WEIGHT_PATTERNS + SIDE_PATTERNS
        if not any(f.endswith(".safetensors") for f in files):
            if not allow_pickle:
                raise SnrtuneError(f"hub repo {repo_id!r} has no safetensors weights: pass --allow-pickle to "
                                   f"download and convert its *.bin files")
            patterns = PICKLE_PATTERNS + SIDE_PATTERNS
        huggingface_hub.snapshot_download(repo_id, revision=revision, token=token, local_dir=out,
                                          allow_patterns=patterns)
    except huggingface_hub.errors.RepositoryNotFoundError as exc:
        raise SnrtuneError(f"hub repo {repo_id!r} not found (or gated: set HF_TOKEN)") from exc
    except huggingface_hub.errors.RevisionNotFoundError as exc:
        raise SnrtuneError(f"revision {revision!r} not found in hub repo {repo_id!r}") from exc
    except SnrtuneError:
        raise
    except Exception as exc:  # network layers raise their own types (httpx, requests, OSError)
        raise SnrtuneError(f"cannot download {repo_id!r} from the hub: {type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else 'no network?'} "
                           f"(offline? copy the model to a local directory and pass its path)") from exc
    shutil.rmtree(out / ".cache", ignore_errors=True)
    if not any(out.glob("*.safetensors")):
        resave_as_safetensors(out, out)
        for pickle in out.glob("*.bin*"):
            pickle.unlink()

