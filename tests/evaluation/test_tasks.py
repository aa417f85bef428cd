"""The task table: the one place a task's few-shot count, ranked metric, direction and role are written."""

from __future__ import annotations

import pytest

from snrtune import tasks
from snrtune.evaluation.options import parse_fewshot
from snrtune.report.tables import primary_metric
from snrtune.report.verdict import pick_target


def test_the_table_drives_evaluate_and_the_report():
    assert parse_fewshot("", ["arc_challenge", "snrtune_ppl", "my_task"]) == {
        "arc_challenge": 25, "snrtune_ppl": None, "my_task": None}
    assert parse_fewshot("arc_challenge=0", ["arc_challenge"]) == {"arc_challenge": 0}
    assert primary_metric("hellaswag", {"acc", "acc_norm"}) == "acc_norm"
    assert primary_metric("my_task", {"f1", "acc"}) == "acc"  # outside the table: the first FALLBACK reported
    assert pick_target(["snrtune_retention", "snrtune_toolcall"], None) == "snrtune_toolcall"  # role target
    assert pick_target(["arc_challenge", "hellaswag"], None) == "arc_challenge"  # no target role: the first
    assert pick_target(["arc_challenge", "hellaswag"], "hellaswag") == "hellaswag"


def test_a_new_task_is_one_entry(monkeypatch):
    spec = tasks.TaskSpec("my_qa", 3, "f1", role="target")
    monkeypatch.setattr(tasks, "_TABLE", {**tasks._TABLE, spec.name: spec})
    assert parse_fewshot("", ["my_qa"]) == {"my_qa": 3}
    assert primary_metric("my_qa", {"exact_match", "f1"}) == "f1"
    assert pick_target(["hellaswag", "my_qa"], None) == "my_qa"


def test_direction_and_roles():
    assert tasks.higher_is_better("snrtune_ppl", "word_perplexity") is False
    assert tasks.higher_is_better("other", "bits_per_byte") is False and tasks.higher_is_better("other", "acc")
    with pytest.raises(ValueError, match="role 'goal'"):
        tasks.TaskSpec("x", 0, "acc", role="goal")
