"""lm-eval task directories: the shipped tasks, --include-path, a task manager over them, loading one task (one line
when it needs the unreachable hub). Shared by `snrtune prefetch` (fetch) and `snrtune evaluate` (evaluation); lm-eval is
imported only when a task manager is built."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from snrtune import hub
from snrtune.errors import SnrtuneError


SHIPPED_TASKS = Path(__file__).parent / "data" / "tasks"  # lm-eval tasks shipped with snrtune


HUB_HINT = ("needs its dataset from the Hugging Face hub, which is unreachable or disabled: "
            "set HF_DATASETS_OFFLINE=0 and HF_HUB_OFFLINE=0 with network access "
            "(HF_TOKEN for gated datasets), or put the data in the local cache")


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
