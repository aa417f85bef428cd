"""`snrtune merge`: turn a training run into a standard HF model directory.

The method's merge strategy (snrtune.method_registry) decides how: "adapter" runs (LoRA / QLoRA /
laser-QLoRA) are merged into the full-precision base (``merge_and_unload``), "spectrum-delta" runs have
their trained tensors overlaid on the base, "full-copy" runs are copied. The tokenizer and chat template are
the run's own (what it trained with; the base's for a run that saved none). The run's snrtune_run.json is
copied with ``model_form``, ``merge`` and the run's ``status`` (from its metrics.json: "finished" or "diverged")
added, so `evaluate` records what it evaluated and skips a diverged run; with ``--sweep-candidate`` (a
learning-rate sweep candidate, not the picked run) also ``sweep_candidate: true`` and the ``learning_rate`` it
trained with (its metrics.json ``config.learning_rate``), so its evaluation is never taken for the run
`snrtune pick` chose. The model card README.md (snrtune.training.card) says what the model is; ``base_source`` in
snrtune_run.json (the base's snrtune_source.json) carries where its base came from to the report's completed card.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from snrtune import method_registry
from snrtune.artifact_names import DELTA_FILE, METRICS_FILE, MODEL_CARD, RUN_FILE, SELECTION_COPY
from snrtune import arguments
from snrtune.fileio import Owner, atomic_dir, write_json
from snrtune.errors import SnrtuneError
from snrtune.fetch.model_check import check_model, check_tokenizer
from snrtune.fetch.params import parameter_table
from snrtune.model_dir import (MODEL_FILES, SOURCE_FILE, TOKENIZER_CONFIG, WEIGHT_DTYPES, check_run_dir,
                               load_source_info, read_json_file, weights_fingerprint)
from snrtune.safetensors_header import read_safetensors_header
from snrtune.spectrum.selection_file import load_selection, pattern_hits
from snrtune.training.card import write_card


def merge_description(spec: method_registry.MethodSpec) -> str:
    """What merge did, in words (recorded in the merged directory's snrtune_run.json)."""
    if spec.merge == "spectrum-delta":
        return f"trained tensors ({DELTA_FILE}) overlaid on the base"
    if spec.merge == "full-copy":
        return "full fine-tuned model copied from the run"
    if spec.four_bit:
        return "LoRA adapter trained on the 4-bit NF4 base, merged into the full-precision base (merge_and_unload)"
    return "LoRA adapter merged into the base (merge_and_unload)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a finished run directory from `snrtune train`")
    parser.add_argument("--base", required=True, help="the model directory the run was trained from")
    parser.add_argument("--out", required=True, help="merged model directory to create")
    parser.add_argument("--sweep-candidate", action="store_true",
                        help="RUN_DIR is a learning-rate sweep candidate: record its learning rate in the identity")
    arguments.output(parser, "dir", inputs=("run_dir", "--base"))


def run(args: argparse.Namespace) -> int:
    identity = merge(args.run_dir, args.base, args.out, sweep_candidate=args.sweep_candidate)
    print(f"merged {identity['id']} ({identity['method']}) → {args.out}")
    return 0


def load_base(base_dir):
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(base_dir, dtype="auto")


def merge_spectrum(run_dir: Path, base_dir, out: Path) -> None:
    from safetensors.torch import load_file

    model = load_base(base_dir)
    delta = load_file(str(run_dir / DELTA_FILE))
    params = dict(model.named_parameters(remove_duplicate=False))
    for name, tensor in delta.items():
        if name not in params or params[name].shape != tensor.shape:
            raise SnrtuneError(f"delta tensor {name} {list(tensor.shape)} does not fit the base model "
                               f"{base_dir}; expected the model the run was trained from")
        params[name].data.copy_(tensor)
    model.save_pretrained(out)


def merge_adapter(run_dir: Path, base_dir, out: Path) -> None:
    import peft

    try:
        model = peft.PeftModel.from_pretrained(load_base(base_dir), str(run_dir))
    except RuntimeError as exc:  # PEFT's "size mismatch for …" when the base has other shapes
        if "size mismatch" not in str(exc):
            raise
        detail = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), "")
        raise SnrtuneError(f"the adapter of {str(run_dir)!r} does not fit the base {str(base_dir)!r} ({detail}); "
                           f"expected the model the run was trained from") from None
    model.merge_and_unload().save_pretrained(out)


def copy_full(run_dir: Path, out: Path) -> None:
    for path in run_dir.iterdir():
        if path.name.endswith(".safetensors") or path.name in MODEL_FILES:
            shutil.copy2(path, out / path.name)


def tokenizer_source(run_dir: Path, base_dir):
    """The run's own tokenizer (with the chat template it trained with); the base's for runs without one."""
    return run_dir if (run_dir / TOKENIZER_CONFIG).is_file() else base_dir


def copy_tokenizer(src, out: Path) -> None:
    import transformers

    transformers.AutoTokenizer.from_pretrained(src).save_pretrained(out)


def check_base(identity: dict, run_dir: Path, base_dir) -> None:
    """The base must be the model the run trained from: the same weights fingerprint as the run recorded
    (snrtune.model_dir.weights_fingerprint). A run made before snrtune recorded it is merged with a note."""
    recorded = identity.get("base_fingerprint")
    if recorded is None:
        print(f"note: {run_dir} records no base fingerprint (an older snrtune made it): the base is not checked")
        return
    found = weights_fingerprint(base_dir)
    if found != recorded:
        raise SnrtuneError(f"--base {str(base_dir)!r} is not the model run {identity['id']!r} ({str(run_dir)!r}) "
                           f"was trained from: its weights fingerprint is {found[:12]}…, the run's base had "
                           f"{recorded[:12]}…; expected the model directory given to `snrtune train`")


def _module_names(table: dict) -> list[str]:
    """The base model's modules that hold a weight (named_parameters() names less ``.weight``, tied aliases too)."""
    names = [*table["parameters"], *table["tied"]]
    return [name.removesuffix(".weight") for name in names if name.endswith(".weight")]


def check_adapter(run_dir: Path, table: dict) -> None:
    """Before any model loads: the run's adapter_config.json is a LoRA config PEFT reads (``r`` an integer >= 1,
    ``lora_alpha`` a number > 0), each of its ``target_modules`` names a module of the base, and
    adapter_model.safetensors holds a LoRA pair of fitting shapes for every module they target."""
    import peft
    from peft.tuners.tuners_utils import check_target_module_exists

    path = run_dir / "adapter_config.json"
    what = f"adapter config {str(path)!r}"
    config = read_json_file(path, "adapter config")
    r, alpha = config.get("r"), config.get("lora_alpha")
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise SnrtuneError(f"{what}: key 'r' is {r!r}; expected an integer >= 1 (the LoRA rank)")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise SnrtuneError(f"{what}: key 'lora_alpha' is {alpha!r}; expected a number > 0")
    try:
        lora = peft.LoraConfig(**{k: v for k, v in config.items() if k in peft.LoraConfig.__dataclass_fields__})
    except Exception as exc:  # PEFT's own checks of the config
        raise SnrtuneError(f"{what} is not a LoRA config PEFT accepts: {type(exc).__name__}: "
                           f"{(str(exc).splitlines() or [''])[0]}") from None
    modules = _module_names(table)
    targets = lora.target_modules
    if not isinstance(targets, str):
        for name in sorted(targets or ()):
            if not any(module == name or module.endswith("." + name) for module in modules):
                raise SnrtuneError(f"{what}: key 'target_modules': {name!r} is not a module of the base model; "
                                   f"expected names like {modules[0].rsplit('.', 1)[-1]!r}")
    hits = {module: check_target_module_exists(lora, module) for module in modules}
    targeted = [module for module, hit in hits.items() if hit and type(hit).__name__ != "_ExcludedModule"]
    if not targeted:
        raise SnrtuneError(f"{what}: key 'target_modules' ({targets!r}) matches no module of the base model")
    header, _ = read_safetensors_header(run_dir / "adapter_model.safetensors")
    shapes = {key: list(entry.shape) for key, entry in header.items()}
    lacking, misfit = [], []
    for name in targeted:
        weight = table["parameters"].get(table["tied"].get(f"{name}.weight", f"{name}.weight"))
        prefix = f"base_model.model.{name}."
        if f"{prefix}lora_A.weight" in shapes and f"{prefix}lora_B.weight" in shapes:  # a linear layer [out, in]
            a, b = shapes[f"{prefix}lora_A.weight"], shapes[f"{prefix}lora_B.weight"]
            fits = weight is None or (len(a) == len(b) == 2 and a[0] == b[1] and [b[0], a[1]] == list(weight))
        elif f"{prefix}lora_embedding_A" in shapes and f"{prefix}lora_embedding_B" in shapes:  # an embedding [n, d]
            a, b = shapes[f"{prefix}lora_embedding_A"], shapes[f"{prefix}lora_embedding_B"]
            fits = weight is None or (len(a) == len(b) == 2 and a[0] == b[1] and [a[1], b[0]] == list(weight))
        else:
            lacking.append(name)
            continue
        if not fits:
            misfit.append(f"{name} (A {a}, B {b}; the base's weight is {weight})")
    if lacking:
        raise SnrtuneError(f"{str(run_dir / 'adapter_model.safetensors')!r} lacks the LoRA weights of {len(lacking)} "
                           f"of the {len(targeted)} modules adapter_config.json targets (e.g. {lacking[0]}): the "
                           f"adapter is incomplete")
    if misfit:
        raise SnrtuneError(f"{str(run_dir / 'adapter_model.safetensors')!r}: the LoRA weights of {misfit[0]} do not "
                           f"fit the base; expected the model the run was trained from")


def check_delta(run_dir: Path, table: dict, selection: dict | None) -> None:
    """Before any model loads: every tensor of spectrum_delta.safetensors is a float parameter of the base of the same
    shape (its runtime name), and with the run's selection copy, the delta holds exactly what its patterns match."""
    path = run_dir / DELTA_FILE
    header, _ = read_safetensors_header(path)
    parameters, tied = table["parameters"], table["tied"]
    if not header:
        raise SnrtuneError(f"{str(path)!r} holds no tensor; expected the trained tensors of the run")
    for key, entry in sorted(header.items()):
        want = parameters.get(tied.get(key, key))
        if entry.dtype not in WEIGHT_DTYPES:
            raise SnrtuneError(f"{str(path)!r}: tensor {key!r} is stored as {entry.dtype}; expected a float dtype "
                               f"({', '.join(WEIGHT_DTYPES)}) as training saves it")
        if want is None or list(entry.shape) != list(want):
            found = "is not a parameter of the base" if want is None else f"is {list(entry.shape)}, the base's {want}"
            raise SnrtuneError(f"{str(path)!r}: tensor {key!r} {found}; expected the model the run was trained from")
    if selection is not None:
        expected = set().union(*(pattern_hits(p, parameters, tied) for p in selection["unfrozen_parameters"]))
        have = {tied.get(k, k) for k in header}
        if have != expected:
            lacking = sorted(expected - have)
            extra = sorted(have - expected)
            raise SnrtuneError(f"{str(path)!r} does not hold what its selection ({SELECTION_COPY}) trains: "
                               f"{len(lacking)} missing ({', '.join(lacking[:3])}), {len(extra)} not selected "
                               f"({', '.join(extra[:3])}); the run is incomplete")


RUN_STATUSES = ("finished", "diverged")  # metrics.json "status" (docs/artifacts.md); absent: finished


def run_status(run_dir: Path) -> str:
    """The run's status from its metrics.json: "finished" or "diverged" (a run recorded without one: finished)."""
    path = run_dir / METRICS_FILE
    status = read_json_file(path, "run metrics").get("status", "finished")
    if status not in RUN_STATUSES:
        raise SnrtuneError(f"{str(path)!r}: status {status!r}; expected one of {', '.join(RUN_STATUSES)}")
    return status


def candidate_fields(run_dir: Path) -> dict:
    """What marks a sweep candidate's identity: ``sweep_candidate`` and the learning rate it trained with."""
    path = run_dir / METRICS_FILE
    lr = (read_json_file(path, "run metrics").get("config") or {}).get("learning_rate")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise SnrtuneError(f"{path}: config.learning_rate is {lr!r}; expected the positive learning rate a sweep "
                           "candidate trained with")
    return {"sweep_candidate": True, "learning_rate": float(lr)}


def merge(run_dir, base_dir, out, sweep_candidate: bool = False) -> dict:
    """Write MERGED_DIR; returns its snrtune_run.json."""
    run_dir, out = Path(run_dir), Path(out)
    identity = check_run_dir(run_dir)  # before any model loads: run record, metrics and weights complete
    status = run_status(run_dir)
    if sweep_candidate:
        identity = {**identity, **candidate_fields(run_dir)}
    spec = method_registry.get(identity["method"])
    selection = None
    if (run_dir / SELECTION_COPY).is_file():
        selection = load_selection(run_dir / SELECTION_COPY, identity["method"])
    own_tokenizer = (run_dir / TOKENIZER_CONFIG).is_file()
    entries = check_model(base_dir, tokenizer=not own_tokenizer)  # files, weights against config.json, tokenizer
    check_base(identity, run_dir, base_dir)
    table = parameter_table(base_dir, list(entries))
    if spec.merge == "full-copy":
        check_model(run_dir)
    elif spec.merge == "adapter":
        check_adapter(run_dir, table)
    else:
        check_delta(run_dir, table, selection)
    if own_tokenizer:
        check_tokenizer(run_dir, table.get("embedding_rows"))
    with atomic_dir(out, Owner("merge")) as tmp:
        if spec.merge == "spectrum-delta":
            merge_spectrum(run_dir, base_dir, tmp)
        elif spec.merge == "full-copy":
            copy_full(run_dir, tmp)
        else:
            merge_adapter(run_dir, base_dir, tmp)
        copy_tokenizer(tokenizer_source(run_dir, base_dir), tmp)
        if (Path(base_dir) / SOURCE_FILE).is_file():
            shutil.copy2(Path(base_dir) / SOURCE_FILE, tmp / SOURCE_FILE)
        identity = {**identity, "model_form": "merged-full-precision", "merge": merge_description(spec),
                    "status": status, "base_source": load_source_info(base_dir)}
        write_json(tmp / RUN_FILE, identity)
        write_card(tmp / MODEL_CARD, identity, read_json_file(run_dir / METRICS_FILE, "run metrics"),
                   identity["base_source"])
    return identity
