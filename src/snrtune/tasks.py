"""The evaluation tasks snrtune knows: one ``TaskSpec`` per task, the single table evaluate and the report read.

A task not in the table still runs (any lm-eval task name does): it gets lm-eval's own few-shot default, the
first metric of ``FALLBACK`` it reports, and the role "retention". This module stays light (no torch): the
workflow imports it while Snakemake parses the Snakefile.
"""

from __future__ import annotations

from dataclasses import dataclass

ROLES = ("target", "retention")


@dataclass(frozen=True)
class TaskSpec:
    """name:             the lm-eval task name.
    num_fewshot:      the usual few-shot count (Open LLM Leaderboard v1 for the public tasks); None leaves lm-eval's.
    primary:          the metric the report ranks by.
    higher_is_better: the primary metric's direction (lm-eval's own record in eval.json wins where present).
    role:             "target" (the task fine-tuning aims at; the report's default target) or "retention"
                      (what fine-tuning should not lose).
    """

    name: str
    num_fewshot: int | None
    primary: str
    higher_is_better: bool = True
    role: str = "retention"

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"task {self.name!r}: role {self.role!r} is not one of {', '.join(ROLES)}")


TASKS = (
    # shipped with snrtune (src/snrtune/data/tasks)
    TaskSpec("snrtune_toolcall", 0, "acc", role="target"),
    TaskSpec("snrtune_retention", 0, "acc"),
    TaskSpec("snrtune_ppl", None, "word_perplexity", higher_is_better=False),
    # the Open LLM Leaderboard v1 set
    TaskSpec("arc_challenge", 25, "acc_norm"),
    TaskSpec("hellaswag", 10, "acc_norm"),
    TaskSpec("mmlu", 5, "acc"),
    TaskSpec("truthfulqa_mc2", 0, "acc"),
    TaskSpec("winogrande", 5, "acc"),
    TaskSpec("gsm8k", 5, "exact_match/strict-match"),
)
# The metric ranked for a task outside the table: the first of these it reports.
FALLBACK = ("acc_norm", "acc", "exact_match", "exact_match/strict-match", "f1", "word_perplexity")

_TABLE = {spec.name: spec for spec in TASKS}


def default_fewshot(name: str) -> int | None:
    spec = _TABLE.get(name)
    return spec.num_fewshot if spec else None


def fewshot_defaults() -> dict[str, int]:
    """Task → its usual few-shot count, for the tasks that have one."""
    return {spec.name: spec.num_fewshot for spec in TASKS if spec.num_fewshot is not None}


def primary_metric(task: str, metrics: set[str]) -> str | None:
    """The metric ranked for ``task`` among the ``metrics`` its eval reported."""
    spec = _TABLE.get(task)
    if spec and spec.primary in metrics:
        return spec.primary
    return next((m for m in FALLBACK if m in metrics), min(metrics) if metrics else None)


def higher_is_better(task: str, metric: str) -> bool:
    """The direction of ``metric`` when lm-eval did not record it: the table's for a primary metric, else from
    the name (perplexities and bits per byte fall)."""
    spec = _TABLE.get(task)
    if spec and spec.primary == metric:
        return spec.higher_is_better
    return "perplexity" not in metric and "bits_per" not in metric


def default_target(tasks: list[str]) -> str:
    """The report's target task when none is named: the first evaluated task with role "target", else the first."""
    return next((t for t in tasks if (spec := _TABLE.get(t)) and spec.role == "target"), tasks[0])
