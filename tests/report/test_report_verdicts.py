"""The verdict on synthetic results directories (issue 18): seed noise alone, a consistent lead, unequal seeds,
a loss spike, a NaN run, unequal budgets, the cheapest method not worse than the best, retention wording; and
the report's validation of what it reads (issue 22). Verdicts come from snrtune.report.report.analyse (no plots);
one case goes through the CLI."""

import json

import numpy as np
import pytest

from report_fixture import Results, bernoulli, ppl_pairs
from snrtune import cli
from snrtune.report import report, variants
from snrtune.errors import SnrtuneError

N = 200
LEARNS = [2.5, 1.6, 1.2, 1.0, 0.9, 0.85, 0.8, 0.8, 0.79, 0.8, 0.78, 0.79]


def _seeds(p, seeds, spread=0.0, rng_seed=0, n=N):
    """Per seed, n 0/1 scores on shared examples (a fixed difficulty per example) with a checkpoint offset."""
    difficulty = np.random.default_rng(12345).beta(3, 2, n) - 0.6
    rng = np.random.default_rng(rng_seed)
    return {s: (rng.random(n) < np.clip(p + difficulty + rng.normal(0, spread), 0, 1)).astype(float).tolist()
            for s in seeds}


def _add(res, method, by_seed, t=None, **kw):
    for seed, values in by_seed.items():
        res.add("m", method, values, t=t, seed=seed, **kw)


def _verdict(root, **kw) -> str:
    found = report.discover(root)
    (section,) = report.analyse(found, **kw)["sections"]
    return section["verdict"]


def test_seed_noise_alone_names_no_winner(tmp_path):
    res = Results(tmp_path)
    res.add("m", "base", bernoulli(0.3, N, 1))
    for i, method in enumerate(("full", "lora", "qlora")):
        _add(res, method, _seeds(0.6, (0, 1, 2), spread=0.04, rng_seed=10 + i))
    text = _verdict(tmp_path)
    assert "No winner on snrtune_toolcall" in text and "inconclusive against" in text and "wins" not in text
    assert "(power now" in text and "One seed per method" not in text


def test_a_consistent_lead_over_three_seeds_is_named(tmp_path):
    res = Results(tmp_path)
    _add(res, "full", _seeds(0.8, (0, 1, 2), spread=0.01, rng_seed=1))
    _add(res, "lora", _seeds(0.6, (0, 1, 2), spread=0.01, rng_seed=2))
    _add(res, "spectrum", _seeds(0.6, (0, 1, 2), spread=0.01, rng_seed=3), t=25)
    text = _verdict(tmp_path)
    assert text.startswith("**full** wins on snrtune_toolcall (acc)")
    assert "significantly ahead of" in text and "Holm over the 2 comparisons of the ranking family" in text


def test_unequal_seeds_rank_on_the_shared_seeds_and_check_the_sign(tmp_path):
    """a leads b on seed 0, the only seed c shares with them, but trails b on seeds 0–2 together: a ranks first
    on the shared data, its paired difference against b is negative, so no winner (the old report named one)."""
    res = Results(tmp_path)
    ones, zeros = [1.0] * N, [0.0] * N
    _add(res, "full", {0: ones[:150] + zeros[:50], 1: ones[:60] + zeros[:140], 2: ones[:60] + zeros[:140]})
    _add(res, "lora", {0: ones[:140] + zeros[:60], 1: ones[:140] + zeros[:60], 2: ones[:140] + zeros[:60]})
    _add(res, "qlora", {0: ones[:20] + zeros[:180]})
    text = _verdict(tmp_path)
    assert "No winner on snrtune_toolcall: full ranks first but its paired difference is not in its favour " \
           "against lora (-0.25 [" in text
    assert "**" not in text


def test_a_late_loss_spike_does_not_exclude_the_best_method(tmp_path):
    res = Results(tmp_path)
    _add(res, "full", _seeds(0.95, (0, 1, 2), spread=0.01, rng_seed=4), train_loss=LEARNS[:-1] + [9.0])
    _add(res, "lora", _seeds(0.63, (0, 1, 2), spread=0.01, rng_seed=5), train_loss=LEARNS)
    text = _verdict(tmp_path)
    assert text.startswith("**full** wins") and "Not ranked" not in text


def test_a_diverged_run_is_shown_never_ranked_and_blocks_a_claim_it_outscores(tmp_path):
    res = Results(tmp_path)
    nan_loss = LEARNS[:6] + [None] * 6  # train wrote non-finite losses as JSON null
    _add(res, "full", _seeds(0.95, (0, 1, 2), spread=0.01, rng_seed=6), train_loss=nan_loss)
    _add(res, "lora", _seeds(0.8, (0, 1, 2), spread=0.01, rng_seed=7))
    _add(res, "qlora", _seeds(0.5, (0, 1, 2), spread=0.01, rng_seed=8), status="diverged")
    out = tmp_path / "report"
    assert cli.main(["report", str(tmp_path), "--out", str(out)]) == 0
    text = (out / "summary.md").read_text()
    assert "Not ranked: full (diverged), qlora (diverged)." in text
    assert ("No winner on snrtune_toolcall: lora is the only method that can be ranked, but full (not ranked) "
            "scored higher, so the claim is withheld.") in text
    assert "| full (diverged) |" in text and "**0.9" not in text


@pytest.mark.parametrize("losses, expected", [
    (LEARNS, "learned"),
    (list(1.0 + 0.05 * np.random.default_rng(3).standard_normal(40)), "did not learn"),  # flat and noisy
    (LEARNS[:-1] + [9.0], "learned"),  # one late spike
    (LEARNS[:5] + [float("nan")] + LEARNS[6:], "diverged"),
    (LEARNS[:5] + [None] + LEARNS[6:], "diverged"),
    (LEARNS[:3], None),  # too few to tell (and no eval loss curve long enough)
])
def test_run_status_is_robust(losses, expected):
    metrics = {"train_loss": [[i, v] for i, v in enumerate(losses)], "eval_loss": [[10, 1.0], [20, 0.9]]}
    assert variants.run_status(metrics) == expected


def test_flat_noisy_runs_rarely_count_as_learned():
    rng = np.random.default_rng(4)
    learned = [variants.run_status({"train_loss": [[i, v] for i, v in enumerate(1.0 + 0.05 * rng.standard_normal(n))]})
               == "learned" for n in (8, 12, 40) for _ in range(200)]
    assert np.mean(learned) <= 0.03  # the old mean-of-last-quarter vs first-loss rule passed half of them


def _budget(examples, steps=24):
    return {"examples_per_step": examples, "world_size": 1, "per_device_train_batch_size": examples,
            "gradient_accumulation_steps": 1, "max_steps": steps}


def test_unequal_budgets_are_not_ranked_and_unknown_budgets_are_not_different(tmp_path):
    res = Results(tmp_path / "a")
    _add(res, "full", _seeds(0.8, (0,), rng_seed=1), budget=_budget(32))
    _add(res, "lora", _seeds(0.4, (0,), rng_seed=2), budget=_budget(8))
    text = _verdict(tmp_path / "a")
    assert ("The runs were trained with different budgets (examples per step: full 32, lora 8), so no method is "
            "ranked") in text and "**" not in text
    settings = report.analyse(report.discover(tmp_path / "a"))["sections"][0]["settings"]
    assert list(settings["examples/step"]) == ["32", "8"] and list(settings["max steps"]) == ["24", "24"]
    res = Results(tmp_path / "b")
    _add(res, "full", _seeds(0.8, (0,), rng_seed=1), budget=_budget(8))
    _add(res, "lora", _seeds(0.4, (0,), rng_seed=2))  # an older metrics.json without budget
    assert "**full** scored highest of these checkpoints" in _verdict(tmp_path / "b")


def test_cheapest_not_worse_than_the_best_and_retention_words_from_tests(tmp_path):
    """spectrum and lora tie on the target; lora is cheaper in memory, spectrum in GPU-hours. lora loses
    retention significantly (0.6 → 0.2 on 80 examples), spectrum's retention is unchanged."""
    res = Results(tmp_path)
    res.add("m", "base", bernoulli(0.2, N, 1), retention=bernoulli(0.6, 80, 9))
    target = _seeds(0.7, (0,), rng_seed=3)[0]
    res.add("m", "spectrum", target, t=25, seed=0, retention=bernoulli(0.6, 80, 9),
            peak_allocated_bytes=3e9, gpu_seconds=1800.0)
    res.add("m", "lora", target[:-3] + [1 - v for v in target[-3:]], seed=0, retention=bernoulli(0.2, 80, 10),
            peak_allocated_bytes=1e9, gpu_seconds=3600.0)
    res.add("m", "qlora", bernoulli(0.25, N, 4), seed=0, peak_allocated_bytes=0.5e9, gpu_seconds=900.0)
    text = _verdict(tmp_path, retention_tasks=["snrtune_retention"])
    assert "inconclusive against lora" in text  # qlora is significantly worse, lora is not
    assert "Not significantly worse than spectrum-t25 on snrtune_toolcall: spectrum-t25, lora." in text
    assert "Cheapest among them: in peak allocated GPU memory lora (1.00GB); in GPU-hours spectrum-t25 (0.5)." in text
    assert "lora: snrtune_toolcall +" in text
    assert "snrtune_retention -0.362 [" in text and "Holm p < 0.001: lost" in text
    assert "spectrum-t25: snrtune_toolcall" in text and "snrtune_retention +0 [0.000, 0.000], Holm p 1.000: no " \
        "significant change" in text
    assert "snrtune_ppl" not in text.split("Against the base model")[1]  # not a retention task here
    with pytest.raises(SnrtuneError, match="--retention-tasks 'hellaswag' was not evaluated"):
        report.analyse(report.discover(tmp_path), retention_tasks=["hellaswag"])


def _one_eval(tmp_path, edit):
    res = Results(tmp_path / "r")
    res.add("m", "full", bernoulli(0.8, 60, 1), seed=0)
    path = tmp_path / "r" / "x1" / "a.json"
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record))
    return path


def _nan(record):
    record["per_example"]["snrtune_toolcall"]["metrics"]["acc"]["values"][3] = float("nan")


@pytest.mark.parametrize("edit, key", [
    (_nan, "per_example.snrtune_toolcall.metrics.acc.values holds a value that is not a finite number"),
    (lambda r: r["results"]["snrtune_toolcall"].update(acc=1.5),
     "results.snrtune_toolcall.acc is 1.5: a proportion must lie in [0, 1]"),
    (lambda r: r["run"].pop("method"), "run.method is missing or not a string"),
    (lambda r: r["results"]["snrtune_toolcall"].update(acc="0.8"),
     "results.snrtune_toolcall.acc is '0.8': expected a finite number"),
    (lambda r: r.update(status="diverged"),
     "results holds scores, but status is diverged (a diverged run is not evaluated)"),
    (lambda r: r.update(status="done"), "status is 'done': expected one of finished, diverged"),
])
def test_bad_eval_files_are_one_line_naming_the_file_and_key(tmp_path, capsys, edit, key):
    path = _one_eval(tmp_path, edit)
    assert cli.main(["report", str(tmp_path / "r"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == f"snrtune report: error: {path}: {key}\n"
    assert not (tmp_path / "out").exists()


def test_two_eval_files_of_one_run_on_different_tasks_are_both_kept(tmp_path):
    path = _one_eval(tmp_path, lambda r: None)
    record = json.loads(path.read_text())
    other = {**record, "results": {"extra_task": {"acc": 0.25}}, "per_example": {},
             "config": {"tasks": ["extra_task"]}}
    (path.parent / "c.json").write_text(json.dumps(other))
    (path.parent / "copy.json").write_text(path.read_text())  # a copy still counts once
    agg = report.analyse(report.discover(tmp_path / "r"))["agg"]
    assert set(agg.task) == {"snrtune_toolcall", "snrtune_retention", "snrtune_ppl", "extra_task"}
    assert set(agg.n_seeds) == {1}


def test_examples_needed_wording_tells_no_difference_from_a_seed_limit():
    from snrtune.report.render import _needed

    assert _needed(float("inf"), 0.0) == "∞ (no difference)"
    assert _needed(float("inf"), 0.1) == "∞ (more examples alone do not suffice)"
    assert _needed(111.2, 0.1) == "~112"


def _diverged_eval(res, method, seed):
    """A diverged run as the workflow leaves it: metrics.json with status diverged and null losses, and the
    eval.json `snrtune evaluate` writes for it (status diverged, no scores)."""
    run = res.add("m", method, bernoulli(0.5, N, seed), seed=seed, status="diverged", train_loss=LEARNS[:3] + [None])
    path = res.root / f"x{res.n}" / "a.json"
    record = json.loads(path.read_text())
    path.write_text(json.dumps({"run": run, "status": "diverged", "results": {}, "higher_is_better": {},
                                "config": record["config"], "model_form": record["model_form"]}))


def test_a_diverged_run_without_scores_is_shown_and_cannot_block_a_lower_is_better_claim(tmp_path):
    """snrtune_ppl (lower is better) as the target: the diverged qlora has no score, so it neither ranks nor
    withholds full's claim (a NaN compared as 'lower' would), and every table shows it as diverged."""
    res = Results(tmp_path)
    res.add("m", "base", bernoulli(0.3, N, 1), ppl=ppl_pairs(80.0, 1))
    for seed in (0, 1, 2):
        res.add("m", "full", bernoulli(0.7, N, 10 + seed), seed=seed, ppl=ppl_pairs(20.0, 20 + seed))
        res.add("m", "lora", bernoulli(0.6, N, 30 + seed), seed=seed, ppl=ppl_pairs(60.0, 40 + seed))
        _diverged_eval(res, "qlora", seed)
    out = tmp_path / "report"
    assert cli.main(["report", str(tmp_path), "--out", str(out), "--target-task", "snrtune_ppl"]) == 0
    text = (out / "summary.md").read_text()
    assert "Not ranked: qlora (diverged, not evaluated)." in text
    assert "**full** wins on snrtune_ppl (word_perplexity)" in text and "withheld" not in text
    row = next(line for line in text.splitlines() if line.startswith("| qlora (diverged) |"))
    assert row.split(" | ")[1:4] == ["–", "–", "–"]  # no score on any task
    comparisons = (out / "comparisons.csv").read_text()
    assert "qlora" not in comparisons  # nothing to compare
    runs = (out / "runs.csv").read_text()
    assert sum(line.startswith("m/qlora-s") and ",diverged," in line for line in runs.splitlines()) == 3


def test_only_diverged_methods_rank_nothing(tmp_path, capsys):
    res = Results(tmp_path)
    res.add("m", "base", bernoulli(0.3, N, 1))
    _diverged_eval(res, "lora", 0)
    text = _verdict(tmp_path)
    assert text == "Not ranked: lora (diverged, not evaluated). No method can be ranked on this model."
    lora = sorted(tmp_path.glob("x*/a.json"))[-1]
    assert cli.main(["report", "--files", str(lora), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (f"snrtune report: error: every eval.json found among --files is of a "
                                       "diverged run (no scores); expected at least one scored model, e.g. the "
                                       "base model's\n")
