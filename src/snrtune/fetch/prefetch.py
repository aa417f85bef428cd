"""`snrtune prefetch`: fill the Hugging Face cache on a machine with network access (a cluster's login node),
so that jobs on offline compute nodes (HF_HUB_OFFLINE=1, HF_DATASETS_OFFLINE=1) find what they need.

Prefetches a hub training dataset (``--data``) and the data of lm-eval tasks (``--tasks``) into the cache
that ``HF_HOME`` names (the workflow sets it from ``hub.hf_home``). Local files and snrtune's shipped tasks
need no network and are only checked. Writes a small JSON record of what is cached (``--out``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from snrtune import hub
from snrtune import arguments
from snrtune.fileio import Owner, write_json
from snrtune.errors import SnrtuneError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="training data: a hub dataset id (downloaded) or a local file (checked)")
    parser.add_argument("--split", default=None, help="only this split of the hub dataset (default: all splits)")
    parser.add_argument("--tasks", help="comma-separated lm-eval tasks whose data to download")
    parser.add_argument("--include-path", action="append", default=[], help="extra lm-eval task directory")
    parser.add_argument("--out", required=True, help="JSON record of what was prefetched")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing --out file that snrtune prefetch did not write")
    arguments.output(parser, "file", inputs=("--data", "--include-path"))


def run(args: argparse.Namespace) -> int:
    record = {"hf_home": os.environ.get("HF_HOME"), "data": None, "tasks": []}
    if args.data:
        record["data"] = prefetch_dataset(args.data, args.split)
    if args.tasks:
        record["tasks"] = prefetch_tasks([t for t in args.tasks.split(",") if t], args.include_path)
    write_json(args.out, record, owner=Owner("prefetch"), force=args.force)
    print(f"prefetched into {record['hf_home'] or 'the default Hugging Face cache'}: "
          f"data {record['data']['source'] if record['data'] else '-'}, tasks {','.join(record['tasks']) or '-'}")
    return 0


def prefetch_dataset(source: str, split: str | None = None) -> dict:
    """Download hub dataset ``source`` into the cache (a local file is only checked: hub.data_kind)."""
    if hub.data_kind(source) == "local":
        return {"source": source, "kind": "local"}
    if hub.offline():
        raise SnrtuneError(f"cannot prefetch hub dataset {source!r}: {' and '.join(hub.offline_variables())} set; run the "
                           "prefetch where the hub is reachable (the workflow runs it on the login node)")
    import datasets

    try:
        loaded = datasets.load_dataset(source, split=split)
    except Exception as exc:  # the hub raises many types; the user needs one line
        raise SnrtuneError(f"cannot download hub dataset {source!r}: {type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    rows = len(loaded) if split else {name: len(part) for name, part in loaded.items()}
    return {"source": source, "kind": "hub", "split": split, "rows": rows}


def prefetch_tasks(tasks: list[str], include_paths: list[str]) -> list[str]:
    """Load every task once (lm-eval downloads its data into the datasets cache); returns the task names."""
    import tempfile

    from snrtune import task_dirs

    with tempfile.TemporaryDirectory(prefix="snrtune-prefetch-") as work:
        manager = task_dirs.task_manager(include_paths, Path(work), tasks)
        for name in tasks:
            task_dirs.load_task(manager, name, None)
    return list(tasks)
