"""`snrtune evaluate MODEL_DIR --tasks T1,T2 --out eval.json`: lm-evaluation-harness on a model directory.

Standard tasks (arc_challenge, hellaswag, mmlu, …) come from lm-eval; the tasks shipped with snrtune
(snrtune_toolcall, snrtune_retention, snrtune_ppl; the tag `snrtune` selects all three) live in
``snrtune/data/tasks``. Their data file paths are relative to the YAML, so they are rewritten to absolute
paths in a temporary copy at run time: the package may be installed anywhere.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from snrtune import hub
from snrtune.artifact_names import RUN_FILE
from snrtune import arguments
from snrtune.artifacts import atomic_file, write_json
from snrtune.errors import SnrtuneError
from snrtune import tasks as tasks_table
from snrtune.model_dir import check_model_dir, load_source_info, read_run_record
from snrtune.record import Stopwatch, run_record

SHIPPED_TASKS = Path(__file__).parents[1] / "data" / "tasks"

HUB_HINT = ("needs its dataset from the Hugging Face hub, which is unreachable or disabled: "
            "set HF_DATASETS_OFFLINE=0 and HF_HUB_OFFLINE=0 with network access "
            "(HF_TOKEN for gated datasets), or put the data in the local cache")
BOOTSTRAP_ITERS = 1000  # stderr of non-mean metrics (perplexity); lm-eval's 100000 takes minutes on a CPU
DTYPES = ("auto", "float32", "bfloat16", "float16")
BACKENDS = ("hf", "vllm")
OWN_MODEL_ARGS = ("pretrained", "dtype")  # set by MODEL_DIR and --dtype


def add_arguments(parser) -> None:
    parser.add_argument("model_dir", help="a Hugging Face model directory (from fetch or merge)")
    parser.add_argument("--tasks", required=True,
                        help="comma-separated lm-eval task names, e.g. snrtune_toolcall,snrtune_retention,arc_challenge")
    parser.add_argument("--out", required=True, help="the eval.json to write")
    parser.add_argument("--limit", type=limit_argument, default=None,
                        help="at most this many documents per task (a fraction when < 1), or per task as "
                             "task=N,task2=M (tasks not named: all their documents)")
    parser.add_argument("--num-fewshot", default="",
                        help="per-task few-shot counts, e.g. arc_challenge=25,mmlu=5 (defaults: %s)"
                        % ", ".join(f"{k}={v}" for k, v in tasks_table.fewshot_defaults().items()))
    parser.add_argument("--batch-size", default="16", help="an integer, 'auto', or 'auto:N' (re-detect N times)")
    parser.add_argument("--max-batch-size", type=arguments.positive_int, default=None,
                        help="the largest batch --batch-size auto may pick (lm-eval's max_batch_size)")
    parser.add_argument("--device", default="cpu", type=arguments.device, help="cpu, cuda, cuda:0, …")
    parser.add_argument("--dtype", default="float32", choices=DTYPES)
    parser.add_argument("--apply-chat-template", action="store_true",
                        help="format prompts with the tokenizer's chat template (instruct models)")
    parser.add_argument("--fewshot-as-multiturn", action=argparse.BooleanOptionalAction, default=None,
                        help="with --apply-chat-template: few-shot examples as alternating user/assistant turns "
                             "(the default there) or, with --no-fewshot-as-multiturn, in one user turn; "
                             "needs --apply-chat-template")
    parser.add_argument("--system-instruction", default=None,
                        help="a system prompt before every example (a system turn with --apply-chat-template, "
                             "else text in front of the prompt)")
    parser.add_argument("--gen-kwargs", default="",
                        help="generation settings of generate_until tasks, as k=v,k2=v2 or a JSON object, e.g. "
                             "max_gen_toks=512,temperature=0 (they update the tasks' own generation_kwargs)")
    parser.add_argument("--include-path", action="append", default=[],
                        help="a directory of extra lm-eval task YAMLs (repeatable)")
    parser.add_argument("--log-samples", action="store_true",
                        help="keep per-example scores: compact (doc_id, value) lists in eval.json under "
                             "'per_example' (for the report's confidence intervals and paired tests), and "
                             "lm-eval's full per-document records in OUT's .samples.jsonl sibling")
    parser.add_argument("--run-json", default=None,
                        help="the run identity (default: MODEL_DIR/snrtune_run.json, else a base model)")
    parser.add_argument("--seed", type=int, default=1234, help="seed for python, numpy, torch and few-shot sampling")
    parser.add_argument("--model-args", default="",
                        help="extra lm-eval model_args, as k=v,k2=v2 or a JSON object, e.g. parallelize=True "
                        "(split a large model across the visible GPUs) or tensor_parallel_size=4 (vllm)")
    parser.add_argument("--backend", default="hf", choices=BACKENDS,
                        help="lm-eval model type: hf (transformers), or vllm where the vllm package is installed")
    arguments.output(parser, "file", inputs=("model_dir", "--run-json", "--include-path"))


# --- arguments --------------------------------------------------------------------------------------------

def parse_tasks(text: str) -> list[str]:
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    if not tasks:
        raise SnrtuneError(f"--tasks {text!r} names no task; expected e.g. snrtune_toolcall,arc_challenge")
    return tasks


def parse_fewshot(text: str, tasks: list[str]) -> dict[str, int]:
    """``task=k,…`` on top of snrtune.tasks' usual counts, for the requested tasks only (None: lm-eval's default)."""
    given: dict[str, int] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or not value.strip().isdigit():
            raise SnrtuneError(f"--num-fewshot item {item!r} is not TASK=K with K a non-negative integer")
        if name.strip() not in tasks:
            raise SnrtuneError(f"--num-fewshot names task {name.strip()!r}, which is not in --tasks {','.join(tasks)}")
        given[name.strip()] = int(value)
    return {t: given.get(t, tasks_table.default_fewshot(t)) for t in tasks}


def parse_assignments(value: str | dict | None, flag: str) -> dict[str, Any]:
    """``k=v,k2=v2`` (values typed as lm-eval types them: True, 3, 0.5, text) or a JSON object, or a dict."""
    if not value:
        return {}
    if isinstance(value, str):
        if value.lstrip().startswith("{"):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise SnrtuneError(f"{flag} is not a valid JSON object: {exc}") from exc
        else:
            from lm_eval.utils import simple_parse_args_string

            if any("=" not in item for item in value.split(",") if item.strip()):
                raise SnrtuneError(f"{flag} {value!r} is not k=v,k2=v2 or a JSON object")
            value = simple_parse_args_string(value)
    if not isinstance(value, dict):
        raise SnrtuneError(f"{flag} {value!r} is not k=v,k2=v2 or a JSON object")
    return dict(value)


def parse_model_args(value: str | dict | None) -> dict[str, Any]:
    """--model-args: extra lm-eval model_args, never snrtune's own pretrained and dtype."""
    value = parse_assignments(value, "--model-args")
    taken = sorted(set(value) & set(OWN_MODEL_ARGS))
    if taken:
        raise SnrtuneError(f"--model-args sets {taken}; expected MODEL_DIR for pretrained and --dtype for dtype")
    return dict(value)


def check_backend(backend: str) -> None:
    import importlib.util

    if backend not in BACKENDS:
        raise SnrtuneError(f"--backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend == "vllm" and importlib.util.find_spec("vllm") is None:
        raise SnrtuneError("--backend vllm needs the vllm package (pip install 'snrtune[vllm]' on a GPU machine); "
                           "expected it installed, or --backend hf")


def parse_batch_size(text: str) -> int | str:
    """A positive integer, 'auto' or 'auto:N'; the workflow config's ``evaluate.batch_size`` is checked by this too."""
    auto, _, times = text.partition(":")
    if text.isdigit() and int(text) > 0:
        return int(text)
    if auto == "auto" and (not _ or (times.isdigit() and int(times) > 0)):
        return text
    raise SnrtuneError(f"--batch-size {text!r} is not a positive integer, 'auto' or 'auto:N'")


def prompt_options(apply_chat_template: bool, fewshot_as_multiturn: bool | None, batch_size: int | str,
                   max_batch_size: int | None, system_instruction: str | None) -> bool:
    """Check the prompt and batching options together (before any model is loaded); returns the
    fewshot_as_multiturn lm-eval gets: as given, else on exactly when the chat template is applied."""
    if fewshot_as_multiturn and not apply_chat_template:
        raise SnrtuneError("--fewshot-as-multiturn needs --apply-chat-template: few-shot turns exist only in a chat")
    if max_batch_size is not None:
        if max_batch_size < 1:
            raise SnrtuneError(f"--max-batch-size {max_batch_size} must be a positive integer")
        if not str(batch_size).startswith("auto"):
            raise SnrtuneError(f"--max-batch-size {max_batch_size} bounds --batch-size auto only; "
                               f"expected --batch-size auto, got {batch_size}")
    if system_instruction is not None and not system_instruction.strip():
        raise SnrtuneError("--system-instruction is empty; expected a system prompt, or leave the flag out")
    return apply_chat_template if fewshot_as_multiturn is None else fewshot_as_multiturn


def check_gen_kwargs(gen_kwargs: dict, task_objs: list) -> None:
    """--gen-kwargs reach only generate_until tasks; none among the tasks is an error (nothing would change)."""
    if not gen_kwargs:
        return
    leaves = []
    for obj in task_objs:
        leaves.extend(_leaf_tasks(obj))
    if not any(task.get_config("output_type") == "generate_until" for task in leaves):
        raise SnrtuneError(f"--gen-kwargs {json.dumps(gen_kwargs, sort_keys=True)} changes generate_until tasks "
                           f"only, and none of --tasks generates ({', '.join(_task_names(leaves))})")


def _leaf_tasks(obj) -> list:
    """A task, or the tasks of a group (lm-eval's Group.get_all_tasks)."""
    return obj.get_all_tasks() if hasattr(obj, "get_all_tasks") else [obj]


def _task_names(tasks: list) -> list[str]:
    return sorted({str(task.get_config("task")) for task in tasks})


def limit_argument(text: str) -> float | dict[str, float]:
    """--limit: ``N`` for every task, or ``task=N,task2=M`` for those tasks; each N a finite number > 0."""
    if "=" not in text:
        return arguments.positive_float(text)
    limits: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not name:
            raise argparse.ArgumentTypeError(f"{item!r} is not TASK=N; expected N or task=N,task2=M")
        limits[name] = arguments.positive_float(value)
    return limits


def parse_limit(limit: float | dict[str, float] | None, tasks: list[str]) -> int | float | dict | None:
    """A count (an int from 1 on) or a fraction below 1, for every task or per task named in --tasks (the
    tasks a mapping does not name: all their documents)."""
    if isinstance(limit, dict):
        unknown = [name for name in limit if name not in tasks]
        if unknown:
            raise SnrtuneError(f"--limit names task {unknown[0]!r}, which is not in --tasks {','.join(tasks)}")
        return {name: parse_limit(value, tasks) for name, value in limit.items()}
    if limit is None:
        return None
    return int(limit) if limit >= 1 else limit


def sample_size(n_docs: int, limit: int | float | None) -> int:
    """Documents evaluated of ``n_docs`` under ``limit`` (lm-eval's rule: a fraction rounds up)."""
    if limit is None:
        return n_docs
    return min(n_docs, int(math.ceil(n_docs * limit)) if limit < 1 else int(limit))


def per_task_samples(leaves: dict[str, list], limits: dict[str, int | float]) -> dict[str, range]:
    """lm-eval's ``samples`` for per-task limits: the first documents of each limited task's subtasks (those
    of a group each get the group's limit), the same documents a single ``limit`` would take."""
    return {leaf.config.task: range(sample_size(len(leaf.eval_docs), limits[name]))
            for name, tasks in leaves.items() if name in limits for leaf in tasks}


# --- task directories -------------------------------------------------------------------------------------

def resolve_task_dir(src: Path, dst: Path) -> Path:
    """Copy the task YAMLs of ``src`` into ``dst``, with relative ``data_files`` made absolute."""
    shutil.copytree(src, dst)
    for path in sorted(dst.rglob("*.yaml")):
        try:
            config = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError:  # e.g. !function tags: nothing of ours to resolve
            continue
        files = (config or {}).get("dataset_kwargs", {}).get("data_files") if isinstance(config, dict) else None
        if not files:
            continue
        origin = src / path.relative_to(dst).parent
        config["dataset_kwargs"]["data_files"] = _absolute(files, origin)
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return dst


def _absolute(files: Any, origin: Path) -> Any:
    if isinstance(files, dict):
        return {k: _absolute(v, origin) for k, v in files.items()}
    if isinstance(files, list):
        return [_absolute(v, origin) for v in files]
    path = Path(files)
    if path.is_absolute() or "://" in str(files):
        return str(files)
    resolved = (origin / path).resolve()
    if not resolved.exists():
        raise SnrtuneError(f"task data file {files!r} (resolved to {resolved}) does not exist")
    return str(resolved)


def task_manager(include_paths: list[str], workdir: Path, tasks: list[str]):
    """A TaskManager over the shipped and included task YAMLs, plus lm-eval's own tasks when needed.

    Indexing lm-eval's thousands of task YAMLs takes 10-20 s on a small CPU, so it is skipped when
    every requested task is local.
    """
    from lm_eval.tasks import TaskManager

    dirs = [resolve_task_dir(SHIPPED_TASKS, workdir / "snrtune_tasks")]
    for i, extra in enumerate(include_paths):
        if not Path(extra).is_dir():
            raise SnrtuneError(f"--include-path {extra!r} is not a directory of task YAMLs")
        dirs.append(resolve_task_dir(Path(extra), workdir / f"include_{i}"))
    local = TaskManager(include_path=[str(d) for d in dirs], include_defaults=False)
    if all(t in local.all_tasks for t in tasks):
        return local
    return TaskManager(include_path=[str(d) for d in dirs])


def load_task(manager, name: str, num_fewshot: int | None):
    """Build one lm-eval task (or group); its dataset is loaded here, so hub errors surface here."""
    if name not in manager.all_tasks:
        raise SnrtuneError(f"unknown lm-eval task {name!r}; expected an lm-eval task, group or tag name "
                           "(e.g. snrtune_toolcall, arc_challenge) or a YAML under --include-path")
    try:
        loaded = manager.load([name])
    except Exception as exc:  # datasets/huggingface_hub raise many types for "no network"
        if _looks_offline(exc):
            raise SnrtuneError(f"task {name!r} {HUB_HINT} ({type(exc).__name__})") from exc
        raise SnrtuneError(f"task {name!r} failed to load: {type(exc).__name__}: {_first_line(exc)}") from exc
    if num_fewshot is not None:
        for task in loaded["tasks"].values():
            task.set_config(key="num_fewshot", value=num_fewshot)
    if loaded["groups"]:  # a group (mmlu): evaluate it whole, so lm-eval aggregates it
        top = [g for g in loaded["groups"].values() if g.name == name]
        return top or list(loaded["groups"].values())[:1]
    return list(loaded["tasks"].values())  # a task, or the tasks of a tag


def _looks_offline(exc: BaseException) -> bool:
    offline = hub.offline()
    words = ("connect", "offline", "network", "resolve", "hub", "timed out", "couldn't reach", "not found on")
    chain, seen = [], exc
    while seen is not None and len(chain) < 10:
        chain.append(f"{type(seen).__name__} {seen}".lower())
        seen = seen.__cause__ or seen.__context__
    return offline or any(w in text for text in chain for w in words)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]


# --- identity and results ---------------------------------------------------------------------------------

def run_identity(model_dir: Path, run_json: str | None) -> tuple[dict, str]:
    """The run evaluated (from snrtune_run.json) or the base model (from snrtune_source.json)."""
    path = Path(run_json) if run_json else model_dir / RUN_FILE
    if run_json and not path.is_file():
        raise SnrtuneError(f"--run-json {run_json!r} does not exist")
    if path.is_file():
        run = read_run_record(path)
        return run, run.get("model_form", "merged-full-precision")
    name = load_source_info(model_dir)["name"]
    return {"id": f"{name}/base", "model": name, "method": "base", "top_percent": None, "seed": None}, "base"


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def tidy_results(raw: dict) -> tuple[dict, dict]:
    """lm-eval's ``{"acc,none": v, "acc_stderr,none": s}`` → ``{"acc": v, "acc_stderr": s}`` per task.

    A filter other than "none" stays in the metric name: ``exact_match,strict-match`` → ``exact_match/strict-match``.
    """
    results, higher = {}, {}
    for task, metrics in raw["results"].items():
        out = {}
        for key, value in metrics.items():
            if "," not in key:
                continue
            metric, _, filt = key.partition(",")
            stderr = metric.endswith("_stderr")
            base = metric[: -len("_stderr")] if stderr else metric
            name = base if filt == "none" else f"{base}/{filt}"
            out[name + ("_stderr" if stderr else "")] = _number(value)
        results[task] = out
        hib = raw.get("higher_is_better", {}).get(task, {})
        higher[task] = {m: bool(v) for m, v in hib.items() if v is not None}
    return results, higher


def _jsonable(obj: Any) -> Any:
    """Per-sample data as plain JSON (non-finite floats → null, other objects → str)."""
    text = json.dumps(obj, default=str, allow_nan=True)
    return json.loads(text, parse_constant=lambda _: None)


# --- per-example scores -----------------------------------------------------------------------------------

def _aggregations(values: list) -> tuple[str, ...]:
    """How per-example values could make the task score: a number → its mean; a (loglikelihood, count) pair →
    a corpus-level ratio (lm-eval's weighted_perplexity or bits_per_byte)."""
    if all(isinstance(v, (int, float)) for v in values):  # bools too (an exact match)
        return ("mean",)
    if all(isinstance(v, list) and len(v) == 2 and all(_number(x) is not None for x in v) for v in values):
        return ("weighted_perplexity", "bits_per_byte")
    return ()


def _matches(values: list, aggregation: str, reported: float | None) -> bool:
    from snrtune.report.stats import corpus_metric

    if reported is None or any(v is None for v in values):
        return False
    import numpy as np

    data = [float(v) for v in values] if aggregation == "mean" else values
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        mine = float(corpus_metric(data, aggregation, axis=0))
    return math.isfinite(mine) and math.isclose(mine, reported, rel_tol=1e-6, abs_tol=1e-9)


def per_example_scores(samples: dict, results: dict) -> dict:
    """lm-eval's logged samples, kept compactly: per task, the sorted ``doc_ids`` and, per metric, its
    ``aggregation`` and one ``values`` entry per doc id (a number, or a [loglikelihood, words|bytes] pair).

    A metric is kept only when its values reproduce the task score in ``results`` (the mean, or the corpus
    ratio for perplexities), so the report can recompute every score it bootstraps; other metrics (e.g. an
    F1 over the whole corpus) are left out and the report falls back to lm-eval's standard error.
    """
    out = {}
    for task, records in samples.items():
        by_metric: dict[str, dict[int, Any]] = {}
        for rec in records:
            filt = rec.get("filter", "none")
            for metric in rec.get("metrics", []):
                name = metric if filt == "none" else f"{metric}/{filt}"
                by_metric.setdefault(name, {})[int(rec["doc_id"])] = rec.get(metric)
        doc_ids = sorted({d for values in by_metric.values() for d in values})
        metrics = {}
        for name, values in by_metric.items():
            if sorted(values) != doc_ids:
                continue
            column = [values[d] for d in doc_ids]
            reported = results.get(task, {}).get(name)
            agg = next((a for a in _aggregations(column) if _matches(column, a, reported)), None)
            if agg:
                metrics[name] = {"aggregation": agg,
                                 "values": [float(v) for v in column] if agg == "mean" else column}
        if metrics:
            out[task] = {"doc_ids": doc_ids, "metrics": metrics}
    return out


def samples_path(out: str | os.PathLike) -> Path:
    """Where --log-samples puts lm-eval's full records: eval.json → eval.samples.jsonl."""
    out = Path(out)
    return out.with_name((out.name[: -len(out.suffix)] if out.suffix else out.name) + ".samples.jsonl")


def write_eval(out: str | os.PathLike, record: dict) -> None:
    """eval.json (without the full samples) and, when the record has them, the .samples.jsonl sibling (one
    line per task × document: {"task": …, lm-eval's record}); both atomically."""
    record = dict(record)
    samples = record.pop("samples", None)
    if samples is not None:
        with atomic_file(samples_path(out)) as handle:
            for task, records in samples.items():
                for rec in records:
                    handle.write(json.dumps({"task": task, **rec}, allow_nan=False) + "\n")
    write_json(out, record)


# --- the step ---------------------------------------------------------------------------------------------

def evaluate_model(model_dir: str | Path, tasks: list[str], num_fewshot: dict[str, int | None] | None = None,
                   limit: int | float | dict[str, int | float] | None = None, batch_size: int | str = 16, device: str = "cpu",
                   dtype: str = "float32", apply_chat_template: bool = False, include_paths: list[str] = (),
                   log_samples: bool = False, run_json: str | None = None, seed: int = 1234,
                   model_args: str | dict | None = None, backend: str = "hf",
                   fewshot_as_multiturn: bool | None = None, system_instruction: str | None = None,
                   gen_kwargs: str | dict | None = None, max_batch_size: int | None = None) -> dict:
    """Evaluate ``model_dir`` on ``tasks``; returns the eval.json record (see docs/artifacts.md), with
    ``log_samples`` also ``per_example`` and lm-eval's full ``samples`` (which write_eval puts beside it). A run
    whose snrtune_run.json says ``"status": "diverged"`` is not loaded: its record has that status, no results."""
    stopwatch = Stopwatch()
    model_dir = Path(model_dir)
    check_model_dir(model_dir, tokenizer=True)  # before lm-eval loads it: complete weights, a tokenizer
    run, model_form = run_identity(model_dir, run_json)
    check_backend(backend)
    multiturn = prompt_options(apply_chat_template, fewshot_as_multiturn, batch_size, max_batch_size,
                               system_instruction)
    generation = parse_assignments(gen_kwargs, "--gen-kwargs")
    lm_args = {"pretrained": str(model_dir), "dtype": dtype, **parse_model_args(model_args)}
    shots = num_fewshot or {t: tasks_table.default_fewshot(t) for t in tasks}
    config = {
        "tasks": tasks, "num_fewshot": shots,
        "limit": limit, "batch_size": batch_size, "device": device, "dtype": dtype,
        "apply_chat_template": apply_chat_template, "fewshot_as_multiturn": multiturn,
        "system_instruction": system_instruction, "gen_kwargs": generation, "max_batch_size": max_batch_size,
        "seed": seed, "bootstrap_iters": BOOTSTRAP_ITERS,
        "backend": backend, "model_args": lm_args,
        "include_paths": [str(p) for p in include_paths],
    }
    if run.get("status") == "diverged":  # NaN weights: nothing to score (docs/checks.md, "Diverged runs")
        return run_record(stopwatch, run=run, status="diverged", results={}, higher_is_better={}, config=config,
                          model_form=model_form, model_dir=str(model_dir))
    import lm_eval

    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="snrtune-tasks-") as workdir:
        manager = task_manager(list(include_paths), Path(workdir), tasks)
        loaded = {t: load_task(manager, t, shots.get(t)) for t in tasks}
        task_objs = [obj for objs in loaded.values() for obj in objs]
        check_gen_kwargs(generation, task_objs)
        per_task = limit if isinstance(limit, dict) else None
        samples = per_task_samples({t: [leaf for obj in objs for leaf in _leaf_tasks(obj)]
                                    for t, objs in loaded.items()}, per_task) if per_task else None
        raw = lm_eval.simple_evaluate(
            model=backend,
            model_args=lm_args,
            tasks=task_objs, batch_size=batch_size, max_batch_size=max_batch_size, device=device,
            limit=None if per_task else limit, samples=samples,
            apply_chat_template=apply_chat_template, fewshot_as_multiturn=multiturn,
            system_instruction=system_instruction, gen_kwargs=generation or None,
            log_samples=log_samples, task_manager=manager, bootstrap_iters=BOOTSTRAP_ITERS,
            random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed,
        )
    results, higher = tidy_results(raw)
    config.update({
        "num_fewshot": {t: raw.get("n-shot", {}).get(t, shots.get(t)) for t in raw["results"]},
        "n_samples": {t: v.get("effective") for t, v in raw.get("n-samples", {}).items()},
        "task_versions": raw.get("versions", {}),
    })
    record = run_record(stopwatch, run=run, status="finished", results=results, higher_is_better=higher,
                        config=config, model_form=model_form, model_dir=str(model_dir))
    if log_samples:
        samples = _jsonable(raw.get("samples", {}))
        record["per_example"] = per_example_scores(samples, results)
        record["samples"] = samples  # written beside eval.json by write_eval, not into it
    return record


def run(args) -> int:
    tasks = parse_tasks(args.tasks)
    record = evaluate_model(
        args.model_dir, tasks, num_fewshot=parse_fewshot(args.num_fewshot, tasks), limit=parse_limit(args.limit, tasks),
        batch_size=parse_batch_size(args.batch_size), device=args.device, dtype=args.dtype,
        apply_chat_template=args.apply_chat_template, include_paths=args.include_path,
        log_samples=args.log_samples, run_json=args.run_json, seed=args.seed,
        model_args=args.model_args, backend=args.backend, fewshot_as_multiturn=args.fewshot_as_multiturn,
        system_instruction=args.system_instruction, gen_kwargs=args.gen_kwargs, max_batch_size=args.max_batch_size,
    )
    write_eval(args.out, record)
    if record["status"] == "diverged":
        print(f"snrtune evaluate: warning: run {record['run']['id']} diverged in training (status diverged in "
              f"{args.run_json or Path(args.model_dir) / RUN_FILE}): its weights were not evaluated; {args.out} records the run "
              f"with status diverged and no scores", file=sys.stderr)
        return 0
    for task, metrics in record["results"].items():
        shown = ", ".join(f"{m}={v:.4g}" for m, v in metrics.items() if not m.endswith("_stderr") and v is not None)
        print(f"{task}: {shown}")
    extra = f" and {samples_path(args.out)}" if "samples" in record else ""
    print(f"wrote {args.out}{extra} ({record['wall_time_s']:.1f} s)")
    return 0
