"""`snrtune evaluate`'s arguments: tasks, few-shot counts, model args, batch size, prompt and generation options, limits (all checked before any model loads)."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from snrtune import arguments
from snrtune.errors import SnrtuneError
from snrtune import tasks as tasks_table


BACKENDS = ("hf", "vllm")


OWN_MODEL_ARGS = ("pretrained", "dtype")  # set by MODEL_DIR and --dtype


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


def parse_key_values(value: str | dict | None, flag: str) -> dict[str, Any]:
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
    value = parse_key_values(value, "--model-args")
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
        leaves.extend(leaf_tasks(obj))
    if not any(task.get_config("output_type") == "generate_until" for task in leaves):
        raise SnrtuneError(f"--gen-kwargs {json.dumps(gen_kwargs, sort_keys=True)} changes generate_until tasks "
                           f"only, and none of --tasks generates ({', '.join(_task_names(leaves))})")


def leaf_tasks(obj) -> list:
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


def check_limit_documents(leaves: dict[str, list], limit: int | float | dict | None) -> None:
    """Every task evaluated has documents and keeps at least one under ``limit``: a fraction smaller than one
    document of a task (lm-eval would round it up to a single document and report its score as the task's) or a
    task with no documents is an error naming the task."""
    for name, tasks in leaves.items():
        task_limit = limit.get(name) if isinstance(limit, dict) else limit
        for leaf in tasks:
            n_docs = len(leaf.eval_docs)
            label = leaf.config.task
            if n_docs == 0:
                raise SnrtuneError(f"task {label!r} has no documents to evaluate; expected a task with test data")
            if task_limit is not None and task_limit < 1 and n_docs * task_limit < 1:
                raise SnrtuneError(f"--limit {task_limit:g} of task {label!r}'s {n_docs} documents is "
                                   f"{n_docs * task_limit:.3g} documents: it leaves none to score; expected a limit "
                                   f"of at least {1 / n_docs:.3g} (or a count, e.g. --limit 10)")
