"""Synthetic results directories for the report tests: eval.json / metrics.json files (with per-example scores)
written under unhelpful paths, no training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

N_TOOLCALL, N_RETENTION = 60, 80
PPL_WORDS = [40, 55, 62, 38, 71, 45, 50, 66]


def bernoulli(p: float, n: int, seed: int) -> list[float]:
    return (np.random.default_rng(seed).random(n) < p).astype(float).tolist()


def ppl_pairs(word_perplexity: float, seed: int) -> list[list[float]]:
    """Per-document (loglikelihood, words) whose corpus word perplexity is exactly ``word_perplexity``."""
    rng = np.random.default_rng(seed)
    per_word = -np.log(word_perplexity) + rng.normal(0, 0.2, len(PPL_WORDS))
    per_word += -np.log(word_perplexity) - (per_word * PPL_WORDS).sum() / sum(PPL_WORDS)
    return [[float(w * pw), float(w)] for w, pw in zip(PPL_WORDS, per_word)]


def run_identity(model: str, method: str, t=None, seed=None, kind=None) -> dict:
    if method == "base":
        return {"id": f"{model}/base", "model": model, "method": "base", "top_percent": None, "seed": None}
    named = method if kind in (None, "snr") or method.endswith(kind) else f"{method}-{kind}"
    rid = f"{model}/{named}" + (f"-t{t}" if t is not None else "") + f"-s{seed}"
    run = {"id": rid, "model": model, "method": method, "top_percent": t, "seed": seed}
    if kind:
        run["selection_kind"] = kind
    return run


def eval_record(run: dict, toolcall: list[float], retention: list[float], ppl: list[list[float]],
                per_example: bool = True) -> dict:
    from snrtune.aggregation import corpus_metric

    acc, ret = float(np.mean(toolcall)), float(np.mean(retention))
    wp = float(corpus_metric(ppl, "weighted_perplexity", axis=0))
    record = {
        "run": run, "model_form": "base" if run["method"] == "base" else "merged-full-precision",
        "results": {"snrtune_toolcall": {"acc": acc, "acc_stderr": float(np.sqrt(acc * (1 - acc) / (len(toolcall) - 1)))},
                    "snrtune_retention": {"acc": ret, "acc_stderr": float(np.sqrt(ret * (1 - ret) / (len(retention) - 1)))},
                    "snrtune_ppl": {"word_perplexity": wp, "word_perplexity_stderr": None}},
        "higher_is_better": {"snrtune_toolcall": {"acc": True}, "snrtune_retention": {"acc": True},
                             "snrtune_ppl": {"word_perplexity": False}},
        "config": {"tasks": ["snrtune"], "limit": None}, "wall_time_s": 30.0,
    }
    if per_example:
        record["per_example"] = {
            "snrtune_toolcall": {"doc_ids": list(range(len(toolcall))),
                                 "metrics": {"acc": {"aggregation": "mean", "values": toolcall}}},
            "snrtune_retention": {"doc_ids": list(range(len(retention))),
                                  "metrics": {"acc": {"aggregation": "mean", "values": retention}}},
            "snrtune_ppl": {"doc_ids": list(range(len(ppl))),
                            "metrics": {"word_perplexity": {"aggregation": "weighted_perplexity", "values": ppl}}},
        }
    return record


def metrics_record(run: dict, learns: bool = True, params: int = 1_000_000, train_loss=None, **extra) -> dict:
    steps = range(0, 40, 5)
    train = [[s, 2.0 / (s + 1) + 0.5] if learns else [s, 1.0 + 0.01 * s] for s in steps]
    if train_loss is not None:
        train = [[5 * i, loss] for i, loss in enumerate(train_loss)]
    return {**extra, "run": run, "trainable_params": params, "total_params": 10_000_000, "peak_memory_bytes": 2e9,
            "wall_time_s": 100.0, "tokens_per_s": 1000.0, "train_loss": train,
            "eval_loss": [[s, 2.2 / (s + 1)] for s in (10, 20, 30)], "selection": None}


class Results:
    """Write runs into a results directory: ``add(model, method, toolcall=…, …)``."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.n = 0

    def add(self, model: str, method: str, toolcall: list[float], retention: list[float] | None = None,
            ppl: list[list[float]] | None = None, t=None, seed=None, kind=None, learns: bool = True,
            per_example: bool = True, train_loss=None, **metrics) -> dict:
        """``train_loss``: the logged losses (None for a non-finite one); ``metrics``: more metrics.json keys
        (``budget``, ``status``)."""
        run = run_identity(model, method, t, seed, kind)
        retention = retention if retention is not None else bernoulli(0.6, N_RETENTION, 999)
        ppl = ppl if ppl is not None else ppl_pairs(50.0, 999)
        self.n += 1
        folder = self.root / f"x{self.n}"
        folder.mkdir(parents=True)
        (folder / "a.json").write_text(json.dumps(eval_record(run, toolcall, retention, ppl, per_example)))
        if method != "base":
            (folder / "b.json").write_text(json.dumps(metrics_record(run, learns, train_loss=train_loss, **metrics)))
        return run

    def add_candidate(self, model: str, method: str, learning_rate: float, toolcall: list[float],
                      retention: list[float], ppl: list[list[float]], t=None, seed=None, kind=None) -> dict:
        """A learning-rate sweep candidate's eval.json (its identity as `snrtune merge --sweep-candidate` marks
        it); no metrics.json: the candidate's run directory is not among the report's inputs."""
        run = {**run_identity(model, method, t, seed, kind), "sweep_candidate": True, "learning_rate": learning_rate}
        self.n += 1
        folder = self.root / f"x{self.n}"
        folder.mkdir(parents=True)
        (folder / "a.json").write_text(json.dumps(eval_record(run, toolcall, retention, ppl)))
        return run
