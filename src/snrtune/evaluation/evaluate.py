"""`snrtune evaluate MODEL_DIR --tasks T1,T2 --out eval.json`: lm-evaluation-harness on a model directory.

Standard tasks (arc_challenge, hellaswag, mmlu, …) come from lm-eval; the tasks shipped with snrtune
(snrtune_toolcall, snrtune_retention, snrtune_ppl; the tag `snrtune` selects all three) live in
``snrtune/data/tasks``. Their data file paths are relative to the YAML, so they are rewritten to absolute
paths in a temporary copy at run time: the package may be installed anywhere.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from snrtune.artifact_names import RUN_FILE
from snrtune import arguments
from snrtune import tasks as tasks_table
from snrtune.errors import SnrtuneError
from snrtune.fetch.model_check import check_model, first_nonfinite
from snrtune.model_dir import load_source_info
from snrtune.record import Stopwatch, run_record
from snrtune.evaluation.options import (BACKENDS, leaf_tasks, check_backend, check_gen_kwargs, check_limit_documents,
                                        limit_argument, parse_key_values, parse_batch_size, parse_fewshot,
                                        parse_limit, parse_model_args, parse_tasks, per_task_samples, prompt_options)
from snrtune.evaluation.results import (SAMPLES_SUFFIX, jsonable, per_example_scores, evaluated_identity,
                                        samples_path, tidy_results, write_eval)
from snrtune.evaluation.shared_context import lm_eval_model, use_shared_context
from snrtune.task_dirs import load_task, task_manager


BOOTSTRAP_ITERS = 1000  # stderr of non-mean metrics (perplexity); lm-eval's 100000 takes minutes on a CPU


DTYPES = ("auto", "float32", "bfloat16", "float16")


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
    parser.add_argument("--seed", type=arguments.seed, default=1234,
                        help="seed for python, numpy, torch and few-shot sampling")
    parser.add_argument("--model-args", default="",
                        help="extra lm-eval model_args, as k=v,k2=v2 or a JSON object, e.g. parallelize=True "
                        "(split a large model across the visible GPUs) or tensor_parallel_size=4 (vllm)")
    parser.add_argument("--backend", default="hf", choices=BACKENDS,
                        help="lm-eval model type: hf (transformers), or vllm where the vllm package is installed")
    parser.add_argument("--share-context", action=argparse.BooleanOptionalAction, default=None,
                        help="hf backend: score all continuations of one context (a question's choices) from one "
                             "pass over the context, not one pass per choice (default: on with --device cpu, off "
                             "on a GPU, where lm-eval's wide batches can be faster; docs/evaluation.md)")
    parser.add_argument("--force", action="store_true", help="replace an existing --out file this step did not write")
    arguments.output(parser, "file", inputs=("model_dir", "--run-json", "--include-path"),
                     siblings=lambda args, out: [(str(samples_path(out)), "file", SAMPLES_SUFFIX)]
                     if args.log_samples else [])


def evaluate_model(model_dir: str | Path, tasks: list[str], num_fewshot: dict[str, int | None] | None = None,
                   limit: int | float | dict[str, int | float] | None = None, batch_size: int | str = 16, device: str = "cpu",
                   dtype: str = "float32", apply_chat_template: bool = False, include_paths: list[str] = (),
                   log_samples: bool = False, run_json: str | None = None, seed: int = 1234,
                   model_args: str | dict | None = None, backend: str = "hf",
                   fewshot_as_multiturn: bool | None = None, system_instruction: str | None = None,
                   gen_kwargs: str | dict | None = None, max_batch_size: int | None = None,
                   share_context: bool | None = None) -> dict:
    """Evaluate ``model_dir`` on ``tasks``; returns the eval.json record (see docs/artifacts.md), with
    ``log_samples`` also ``per_example`` and lm-eval's full ``samples`` (which write_eval puts beside it). A run
    whose snrtune_run.json says ``"status": "diverged"`` is not loaded: its record has that status, no results.
    ``share_context`` None: on for the hf backend on a CPU (snrtune.evaluation.shared_context)."""
    stopwatch = Stopwatch()
    model_dir = Path(model_dir)
    arguments.check_device_present(device)
    # before lm-eval loads it: complete weights of the model its config.json describes, a tokenizer that loads
    check_model(model_dir, tokenizer=True)
    run, model_form = evaluated_identity(model_dir, run_json)
    check_backend(backend)
    multiturn = prompt_options(apply_chat_template, fewshot_as_multiturn, batch_size, max_batch_size,
                               system_instruction)
    generation = parse_key_values(gen_kwargs, "--gen-kwargs")
    lm_args = {"pretrained": str(model_dir), "dtype": dtype, **parse_model_args(model_args)}
    shots = num_fewshot or {t: tasks_table.default_fewshot(t) for t in tasks}
    config = {
        "tasks": tasks, "num_fewshot": shots,
        "limit": limit, "batch_size": batch_size, "device": device, "dtype": dtype,
        "apply_chat_template": apply_chat_template, "fewshot_as_multiturn": multiturn,
        "system_instruction": system_instruction, "gen_kwargs": generation, "max_batch_size": max_batch_size,
        "seed": seed, "bootstrap_iters": BOOTSTRAP_ITERS,
        "backend": backend, "model_args": lm_args,
        "share_context": use_shared_context(share_context, device, backend),
        "include_paths": [str(p) for p in include_paths],
    }
    evaluated = load_source_info(model_dir)["name"]
    if run.get("status") == "diverged":  # NaN weights: nothing to score (docs/checks.md, "Diverged runs")
        return run_record(stopwatch, run=run, status="diverged", results={}, higher_is_better={}, config=config,
                          model_form=model_form, model_dir=str(model_dir), evaluated_model=evaluated)
    bad = first_nonfinite(model_dir)
    if bad is not None:
        raise SnrtuneError(f"{str(bad[0])!r}: weight {bad[1]!r} holds {bad[2]}: a model with non-finite weights "
                           f"cannot be scored (a run that diverged? its snrtune_run.json would say status diverged)")
    import lm_eval

    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    if not sys.stderr.isatty():  # datasets' "Generating test split" bars: carriage-return frames in a log file
        import datasets

        datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory(prefix="snrtune-tasks-") as workdir:
        manager = task_manager(list(include_paths), Path(workdir), tasks)
        loaded = {t: load_task(manager, t, shots.get(t)) for t in tasks}
        task_objs = [obj for objs in loaded.values() for obj in objs]
        check_gen_kwargs(generation, task_objs)
        check_limit_documents({t: [leaf for obj in objs for leaf in leaf_tasks(obj)] for t, objs in loaded.items()},
                              limit)
        per_task = limit if isinstance(limit, dict) else None
        samples = per_task_samples({t: [leaf for obj in objs for leaf in leaf_tasks(obj)]
                                    for t, objs in loaded.items()}, per_task) if per_task else None
        raw = lm_eval.simple_evaluate(
            model=lm_eval_model(config["share_context"], backend),
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
    empty = sorted(task for task, count in config["n_samples"].items() if count == 0)
    if empty:
        raise SnrtuneError(f"task {empty[0]!r} scored no document (--limit {limit}); expected at least one")
    record = run_record(stopwatch, run=run, status="finished", results=results, higher_is_better=higher,
                        config=config, model_form=model_form, model_dir=str(model_dir), evaluated_model=evaluated)
    if log_samples:
        samples = jsonable(raw.get("samples", {}))
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
        share_context=args.share_context,
    )
    write_eval(args.out, record, force=args.force)
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
