"""`snrtune pick CANDIDATE_RUN... --out RUN_DIR`: the learning-rate sweep's choice.

Every candidate is a finished `snrtune train` run of the same method, t and seed that differs only in its
learning rate. The candidate with the lowest final held-out validation loss (``eval_loss`` in its
metrics.json, never a test score) becomes RUN_DIR: its files are hard-linked (copied where links are not
possible) and ``sweep.json`` records the whole table, so the report can show lr × validation loss with the
chosen one marked.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from snrtune.artifact_names import METRICS_FILE, OUTPUT_MARKER, SWEEP_FILE
from snrtune import arguments
from snrtune.fileio import Owner, atomic_dir, write_json
from snrtune.errors import SnrtuneError
from snrtune.model_dir import check_run_dir, read_json_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("candidates", nargs="+", help="finished run directories that differ only in learning rate")
    parser.add_argument("--out", required=True, help="the run directory to create from the chosen candidate")
    arguments.output(parser, "dir", inputs=("candidates",))


def run(args: argparse.Namespace) -> int:
    table = pick(args.candidates, args.out)
    chosen = table["chosen"]
    if chosen.get("status") == "diverged":
        print(f"snrtune pick: warning: every candidate diverged; {args.out} is the smallest learning rate's run "
              f"({chosen['learning_rate']:g}) with status diverged", file=sys.stderr)
        return 0
    print(f"picked learning rate {chosen['learning_rate']:g} (validation loss {chosen['eval_loss']:.4f}) "
          f"of {len(table['candidates'])} candidates → {args.out}")
    return 0


def final_eval_loss(metrics: dict) -> float | None:
    """The last logged held-out validation loss of a run, or None when it has none, it is not finite (null
    in a diverged run's metrics.json) or the run diverged."""
    losses = metrics.get("eval_loss") or []
    if not losses or metrics.get("status") == "diverged" or losses[-1][1] is None:
        return None
    value = float(losses[-1][1])
    return value if math.isfinite(value) else None


CANDIDATE_STATUSES = ("finished", "diverged")  # metrics.json "status" of a finished `snrtune train` run


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def candidate_row(run_dir: Path) -> dict[str, Any]:
    """A candidate's row, once it is a complete run (snrtune.model_dir.check_run_dir: record, metrics and the
    weights its merge needs) whose metrics.json states a positive learning rate, a known status and numeric
    losses; one line naming the file and key otherwise."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        raise SnrtuneError(f"sweep candidate {run_dir} has no metrics.json; expected a finished `snrtune train` run")
    check_run_dir(run_dir)
    metrics = read_json_file(path, "run metrics")
    lr = (metrics.get("config") or {}).get("learning_rate")
    if not _number(lr) or lr <= 0:
        raise SnrtuneError(f"{str(path)!r}: key 'config.learning_rate' is {lr!r}; expected the positive learning "
                           f"rate the candidate trained with")
    status = metrics.get("status", "finished")
    if status not in CANDIDATE_STATUSES:
        raise SnrtuneError(f"{str(path)!r}: key 'status' is {status!r}; expected one of {', '.join(CANDIDATE_STATUSES)}")
    for key in ("train_loss", "eval_loss"):
        points = metrics.get(key) or []
        if not isinstance(points, list) or not all(
                isinstance(p, list) and len(p) == 2 and type(p[0]) is int and (p[1] is None or _number(p[1]))
                for p in points):
            raise SnrtuneError(f"{str(path)!r}: key {key!r} is not a list of [step, loss] pairs (an integer step, "
                               f"a finite loss or null)")
    if not isinstance((metrics.get("run") or {}).get("id"), str):
        raise SnrtuneError(f"{str(path)!r}: key 'run.id' is missing or not a string")
    return {"run_dir": str(run_dir), "id": metrics["run"]["id"], "learning_rate": float(lr),
            "eval_loss": final_eval_loss(metrics), "status": status,
            "final_train_loss": metrics["train_loss"][-1][1] if metrics.get("train_loss") else None}


def choose(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The row with the lowest validation loss (ties: the smaller learning rate)."""
    ids = {row["id"] for row in rows}
    if len(ids) != 1:
        raise SnrtuneError(f"sweep candidates belong to different runs {sorted(ids)}; expected one method, t and seed")
    rates = [row["learning_rate"] for row in rows]
    if len(set(rates)) != len(rates):
        raise SnrtuneError(f"sweep candidates repeat a learning rate ({sorted(rates)}); expected one run per rate")
    scored = [row for row in rows if row["eval_loss"] is not None]
    if not scored and all(row.get("status") == "diverged" for row in rows):
        # every learning rate diverged: the smallest one stands for the method, as diverged
        return min(rows, key=lambda row: row["learning_rate"])
    if not scored:
        raise SnrtuneError("no sweep candidate has a finite validation loss; the sweep needs held-out data "
                           "(training config val_fraction > 0)")
    return min(scored, key=lambda row: (row["eval_loss"], row["learning_rate"]))


def link_tree(src: Path, dst: Path) -> None:
    """Hard-link every file of ``src`` into ``dst`` (copy where the file system refuses links)."""
    for path in sorted(src.rglob("*")):
        if path.name == OUTPUT_MARKER and path.parent == src:
            continue  # the new directory's own marker
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)


def pick(candidates: list[str | os.PathLike], out: str | os.PathLike) -> dict[str, Any]:
    """Write RUN_DIR from the best candidate; returns the sweep table written to its sweep.json."""
    rows = sorted((candidate_row(Path(c)) for c in candidates), key=lambda row: row["learning_rate"])
    chosen = choose(rows)
    table = {"criterion": "lowest final held-out validation loss (eval_loss)",
             "candidates": [{**row, "chosen": row is chosen} for row in rows], "chosen": chosen}
    with atomic_dir(out, Owner("pick")) as tmp:
        link_tree(Path(chosen["run_dir"]), tmp)
        write_json(tmp / SWEEP_FILE, table)
    return table
