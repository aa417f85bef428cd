"""`snrtune report` on synthetic results directories (per-example scores, no training): per-model tables,
seed-aware intervals, the comparison families and their corrections, the verdict, "did not learn", the random
control."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from report_fixture import Results, bernoulli, ppl_pairs
from snrtune import cli
from snrtune.report import stats
from snrtune.errors import SnrtuneError
from snrtune.report.plots import label_groups, pareto_front
from snrtune.report.report import build_report

# variant -> seed -> toolcall accuracy (60 examples); qlora scores best although its training loss rises
TOOLCALL = {"spectrum": 0.8, "spectrum-random": 0.45, "lora": 0.5, "qlora": 0.95, "full": 0.75}


def _snr():
    types = ["self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"]
    modules = [{"name": f"model.layers.{l}.{t}", "param": f"model.layers.{l}.{t}.weight", "type": t, "layer": l,
                "expert": None, "snr": 0.1 * (l + 1) + 0.01 * i, "status": "ok"}
               for l in range(4) for i, t in enumerate(types)]
    return {"model": "tiny", "method": "gram", "modules": modules, "parameters": {}, "total_params": 10_000_000,
            "not_scannable": []}


def _selection(t, kind="snr", seed=None):
    layer = 3 if kind == "snr" else 1
    mods = [{"name": f"model.layers.{layer}.{ty}", "type": ty, "layer": layer, "snr": 0.4}
            for ty in ["self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"]]
    return {"model": "tiny", "selection": kind, "seed": seed, "top_percent": t, "modules": mods,
            "unfrozen_parameters": [f"^model\\.layers\\.{layer}\\."], "trainable_params": 2_000_000,
            "total_params": 10_000_000}


def _toolcall(method, seed):
    return bernoulli(TOOLCALL[method], 60, seed=100 * len(method) + seed)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    res = Results(root)
    res.add("tiny", "base", bernoulli(0.1, 60, seed=1))
    for seed in (0, 1):
        res.add("tiny", "spectrum", _toolcall("spectrum", seed), t=25, seed=seed, kind="snr",
                retention=bernoulli(0.55, 80, seed=50 + seed))
        # the control is recognised from the run identity (seed 0) and from the method name (seed 1)
        res.add("tiny", "spectrum" if seed == 0 else "spectrum-random", _toolcall("spectrum-random", seed), t=25,
                seed=seed, kind="random" if seed == 0 else None)
        res.add("tiny", "lora", _toolcall("lora", seed), seed=seed, ppl=ppl_pairs(47.0 + 2 * seed, seed))
        res.add("tiny", "qlora", _toolcall("qlora", seed), seed=seed, learns=False)
        res.add("tiny", "full", _toolcall("full", seed), seed=seed)
    (root / "misc").mkdir()
    (root / "misc" / "s.json").write_text(json.dumps(_snr()))
    (root / "misc" / "sel25.yaml").write_text(yaml.safe_dump(_selection(25)))
    (root / "misc" / "sel25r.yaml").write_text(yaml.safe_dump(_selection(25, "random", 0)))
    (root / "misc" / "config.json").write_text(json.dumps({"hidden_size": 8}))  # not an artifact: ignored
    (root / "misc" / "copy.json").write_text((root / "x2" / "a.json").read_text())  # same run: not another seed
    return root


@pytest.fixture(scope="module")
def report(results, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "report"
    assert cli.main(["report", str(results), "--out", str(out)]) == 0
    return out


def _per_example(results, run_id, task="snrtune_toolcall", metric="acc"):
    for path in results.rglob("a.json"):
        record = json.loads(path.read_text())
        if record["run"]["id"] == run_id:
            return record["per_example"][task]["metrics"][metric]["values"]
    raise KeyError(run_id)


def _row(frame, **where):
    mask = np.ones(len(frame), dtype=bool)
    for key, value in where.items():
        mask &= frame[key] == value
    assert mask.sum() == 1, where
    return frame[mask].iloc[0]


def test_runs_csv_is_tidy_and_knows_controls_and_learning(report):
    runs = pd.read_csv(report / "runs.csv")
    assert len(runs) == 11 * 3  # one primary metric per task in the fixture
    row = _row(runs, run="tiny/spectrum-t25-s1", task="snrtune_toolcall")
    assert row.variant == "spectrum-t25" and row.selection_kind == "snr" and row.seed == 1 and row.learned
    control = runs[runs.run.str.contains("random")]
    assert set(control.run) == {"tiny/spectrum-random-t25-s0", "tiny/spectrum-random-t25-s1"}
    assert set(control.variant) == {"spectrum-random-t25"} and set(control.selection_kind) == {"random"}
    # qlora's training loss rose, but its target score (0.95) is far above the base model's (0.1): it learned
    assert runs[runs.method == "qlora"].learned.all() and set(runs[runs.method == "qlora"].status) == {"learned"}


def _trained_toolcall(results):
    """Every trained variant's per-example tool-call scores (seeds × examples), as the report pools them."""
    names = {"spectrum-t25": "spectrum-t25", "spectrum-random-t25": "spectrum-random-t25", "lora": "lora",
             "qlora": "qlora", "full": "full"}
    return {v: np.stack([_per_example(results, f"tiny/{run}-s{s}") for s in (0, 1)]) for v, run in names.items()}


def test_scores_carry_the_seed_aware_interval_of_the_per_example_scores(report, results):
    """The interval of a variant with two seeds is about the method: the model's checkpoint variance on the task is
    pooled over its trained variants (stats.checkpoint_variance) and enters with the examples."""
    scores = pd.read_csv(report / "scores.csv")
    tables = _trained_toolcall(results)
    cv = stats.checkpoint_variance(list(tables.values()))
    assert cv.df == 5  # five variants × (2 − 1)
    row = _row(scores, model="tiny", variant="spectrum-t25", task="snrtune_toolcall")
    expected = stats.interval(tables["spectrum-t25"], cv=cv)
    assert row.score == pytest.approx(tables["spectrum-t25"].mean())
    assert (row.ci_low, row.ci_high) == pytest.approx((expected.low, expected.high))
    assert row.ci_method == "wilson" and row.n_seeds == 2 and row.n_examples == 60
    ppl = _row(scores, variant="lora", task="snrtune_ppl")
    pairs = np.stack([_per_example(results, f"tiny/lora-s{s}", "snrtune_ppl", "word_perplexity") for s in (0, 1)])
    assert ppl.score == pytest.approx(48.0)
    # the other variants' perplexity rows are one paragraph set copied for every seed: they count once, so only
    # lora measures the checkpoint variance of this task (on the log scale of the ratio)
    cv_ppl = stats.checkpoint_variance([pairs], "weighted_perplexity", "ratio")
    expected = stats.interval(pairs, "weighted_perplexity", cv=cv_ppl)
    assert (ppl.ci_low, ppl.ci_high) == pytest.approx((expected.low, expected.high))
    assert ppl.ci_low < 48.0 < ppl.ci_high


def test_the_families_their_tests_and_corrections(report, results):
    comp = pd.read_csv(report / "comparisons.csv")
    tables = _trained_toolcall(results)
    cv = stats.checkpoint_variance(list(tables.values()))
    control = _row(comp, variant="spectrum-t25", reference="spectrum-random-t25")
    assert control.family == "secondary: control vs SNR selection" and "SNR vs control" in control.why
    expected = stats.compare(tables["spectrum-t25"], tables["spectrum-random-t25"], cv=cv,
                             confidence=1 - 0.05 / control.family_size)
    assert control.difference == pytest.approx(expected.difference)
    assert (control.ci_low, control.ci_high, control.p_value) == pytest.approx(
        (expected.low, expected.high, expected.p_value))
    assert set(comp.family) == {"primary: best vs each", "secondary: vs reference",
                                "secondary: control vs SNR selection", "gain and retention",
                                "cost answer: within the margin"}
    for family, rows in comp.groupby("family"):  # Bonferroni within each corrected family
        if family in ("primary: best vs each", "cost answer: within the margin"):
            continue
        assert list(rows.p_adjusted) == pytest.approx(list(np.minimum(1, rows.p_value * len(rows))))
    primary = comp[comp.family == "primary: best vs each"]  # the winner's test: each at α, no correction
    assert list(primary.p_adjusted) == pytest.approx(list(primary.p_value)) and set(primary.confidence) == {0.95}
    assert set(primary.variant) == {"qlora"}  # the best contender
    assert set(primary.reference) == {"spectrum-t25", "lora", "full"}  # controls are not contenders
    gains = comp[comp.family == "gain and retention"]
    assert set(gains.reference) == {"base"} and set(gains.task) == {"snrtune_toolcall", "snrtune_retention",
                                                                     "snrtune_ppl"}
    assert {r for r in comp[comp.reference == "full"].variant} >= {"lora", "qlora", "spectrum-random-t25"}


def test_verdict_opens_with_the_answer(report):
    text = (report / "summary.md").read_text()
    assert "## tiny" in text
    answer = text.split("## tiny")[1].split("| method |")[0].strip().splitlines()
    assert 2 <= len(answer) <= 6 and all(line.startswith("- ") for line in answer)
    assert "qlora: the training loss did not clearly fall, but the target score is significantly above" in text
    assert "SNR selection vs its control at equal parameters: spectrum-t25 − spectrum-random-t25 = " in text
    assert "(2 seeds)" in answer[0]


def test_every_plot_written_and_embedded(report):
    pngs = sorted(p.name for p in report.glob("*.png"))
    assert pngs == ["criteria_overlap_tiny_t25.png", "gain_vs_forgetting_tiny.png", "loss_curves_tiny.png",
                    "quality_vs_cost_tiny.png", "scores_tiny.png", "snr_heatmap_tiny_t25.png",
                    "snr_heatmap_tiny_t25_random-s0.png"]
    for name in pngs:
        data = (report / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    page = (report / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(pngs)
    assert '<ul class="verdict"><li>' in page and "on snrtune_toolcall" in page


def test_two_models_are_kept_apart(tmp_path):
    """A model at 0.9 and one at 0.3 are two rows, never one '0.600 ± 0.300'."""
    res = Results(tmp_path / "results")
    res.add("model-a", "full", [1.0] * 54 + [0.0] * 6, seed=0)
    res.add("model-b", "full", [1.0] * 18 + [0.0] * 42, seed=0)
    out = build_report(tmp_path / "results", tmp_path / "report")
    scores = pd.read_csv(out / "scores.csv")
    tool = scores[scores.task == "snrtune_toolcall"]
    assert sorted(tool.score) == pytest.approx([0.3, 0.9]) and sorted(tool.model) == ["model-a", "model-b"]
    assert set(tool.n_seeds) == {1}
    text = (out / "summary.md").read_text()
    assert "## model-a" in text and "## model-b" in text
    assert "0.600" not in text and "0.900 [" in text and "0.300 [" in text
    assert sorted(p.name for p in out.glob("scores_*.png")) == ["scores_model-a.png", "scores_model-b.png"]


def test_a_significant_difference_names_the_winner(tmp_path):
    res = Results(tmp_path / "results")
    res.add("m", "base", bernoulli(0.1, 60, 1))
    res.add("m", "full", bernoulli(0.9, 60, 2), seed=0)
    res.add("m", "lora", bernoulli(0.2, 60, 3), seed=0)
    out = build_report(tmp_path / "results", tmp_path / "report")
    text = (out / "summary.md").read_text()
    assert "**full** scored highest of these checkpoints on snrtune_toolcall" in text
    assert "ahead of every other method, each paired difference significant" in text
    assert "(one seed per method: a claim about these checkpoints, not the methods)" in text
    comp = pd.read_csv(out / "comparisons.csv")
    assert _row(comp, variant="full", reference="lora", family="primary: best vs each").p_value < 0.01


def test_three_seeds_aggregate_over_seeds_and_examples(tmp_path):
    res = Results(tmp_path / "results")
    data = {m: [bernoulli(p + 0.05 * s, 60, 10 * s + i) for s in range(3)]
            for i, (m, p) in enumerate({"full": 0.6, "lora": 0.5}.items())}
    for method, seeds in data.items():
        for seed, values in enumerate(seeds):
            res.add("m", method, values, seed=seed)
    out = build_report(tmp_path / "results", tmp_path / "report")
    scores = pd.read_csv(out / "scores.csv")
    row = _row(scores, variant="full", task="snrtune_toolcall")
    stacked = np.array(data["full"])
    ci = stats.interval(stacked, cv=stats.checkpoint_variance([stacked, np.array(data["lora"])]))
    assert row.n_seeds == 3 and row.score == pytest.approx(stacked.mean(axis=1).mean())
    assert (row.ci_low, row.ci_high) == pytest.approx((ci.low, ci.high))
    comp = _row(pd.read_csv(out / "comparisons.csv"), variant="full", reference="lora", family="primary: best vs each")
    assert comp.n_seeds == "3/3" and comp.unit == "seeds"
    assert comp.difference == pytest.approx((stacked.mean(axis=1) - np.array(data["lora"]).mean(axis=1)).mean())


def test_without_per_example_scores_the_ci_comes_from_lm_evals_stderr_and_says_so(tmp_path):
    res = Results(tmp_path / "results")
    res.add("m", "full", [1.0] * 45 + [0.0] * 15, seed=0, per_example=False)
    res.add("m", "lora", [1.0] * 30 + [0.0] * 30, seed=0, per_example=False)
    out = build_report(tmp_path / "results", tmp_path / "report")
    row = _row(pd.read_csv(out / "scores.csv"), variant="full", task="snrtune_toolcall")
    se = np.sqrt(0.75 * 0.25 / 59)
    assert row.ci_method == "lm-eval stderr"
    assert (row.ci_low, row.ci_high) == pytest.approx((0.75 - 1.959964 * se, 0.75 + 1.959964 * se), rel=1e-5)
    text = (out / "summary.md").read_text()
    assert "]†" in text and "1.96 × lm-eval's standard error" in text
    assert "without per-example scores for every method nothing is tested" in text


def test_several_seeds_without_per_example_scores_take_a_t_interval_over_seeds(tmp_path):
    res = Results(tmp_path / "results")
    for seed, k in enumerate((40, 45, 50)):
        res.add("m", "full", [1.0] * k + [0.0] * (60 - k), seed=seed, per_example=False)
    out = build_report(tmp_path / "results", tmp_path / "report")
    row = _row(pd.read_csv(out / "scores.csv"), variant="full", task="snrtune_toolcall")
    means = np.array([40, 45, 50]) / 60
    half = 4.302653 * means.std(ddof=1) / np.sqrt(3)  # t with 2 degrees of freedom
    assert row.ci_method == "t over seeds (no example variance)"
    assert (row.ci_low, row.ci_high) == pytest.approx((means.mean() - half, means.mean() + half), rel=1e-5)
    assert "omits the example variance" in (out / "summary.md").read_text()


def test_runs_with_different_seed_numbers_are_compared_as_independent_checkpoints(tmp_path):
    """Seeds of different methods are different checkpoints: full's seeds 0–1 and lora's 2–3 are compared as they
    are (the old report, pairing by seed number, could not test them at all)."""
    res = Results(tmp_path / "results")
    for seed in (0, 1):
        res.add("m", "full", bernoulli(0.9, 60, seed), seed=seed)
        res.add("m", "lora", bernoulli(0.1, 60, 5 + seed), seed=seed + 2)
    out = build_report(tmp_path / "results", tmp_path / "report")
    comp = _row(pd.read_csv(out / "comparisons.csv"), variant="full", reference="lora", family="primary: best vs each")
    assert comp.n_seeds == "2/2" and comp.unit == "seeds" and comp.p_value < 0.05
    assert "**full** wins on snrtune_toolcall" in (out / "summary.md").read_text()


def test_a_control_method_of_the_registry_is_compared_with_its_snr_selection(tmp_path, monkeypatch):
    """A registered method with selection_kind "random" (no kind in the run or its metrics, a name that does not
    say it) is recognised as the control of the SNR selection at the same t."""
    from snrtune import method_registry

    spec = method_registry.MethodSpec("spectrum-control", selection_kind="random", four_bit=False, is_adapter=False,
                                      merge="spectrum-delta", label="spectrum-random",
                                      prepare="snrtune.training.methods:prepare_spectrum", mirrors="spectrum")
    monkeypatch.setitem(method_registry._REGISTRY, "spectrum-control", spec)
    res = Results(tmp_path / "results")
    res.add("m", "spectrum", bernoulli(0.8, 60, 1), t=25, seed=0)
    res.add("m", "spectrum-control", bernoulli(0.3, 60, 2), t=25, seed=0)
    out = build_report(tmp_path / "results", tmp_path / "report")
    runs = pd.read_csv(out / "runs.csv")
    assert set(runs.variant) == {"spectrum-t25", "spectrum-random-t25"}
    assert set(runs[runs.method == "spectrum-control"].selection_kind) == {"random"}
    row = _row(pd.read_csv(out / "comparisons.csv"), variant="spectrum-t25", reference="spectrum-random-t25")
    assert "SNR vs control" in row.why and row.p_adjusted < 0.01
    assert "spectrum-t25 − spectrum-random-t25 = +0.5" in (out / "summary.md").read_text()
    assert "SNR significantly better" in (out / "summary.md").read_text()
    # spectrum-t25 is the only method that may be chosen: no cell is marked best of nothing
    first_table = (out / "summary.md").read_text().split("\n\n| method |")[1].split("\n\n")[0]
    assert "spectrum-t25" in first_table and "**" not in first_table


def test_pareto_front():
    x, y = [1.0, 2.0, 3.0, 2.5], [0.5, 0.7, 0.9, 0.6]
    assert list(pareto_front(x, y, True)) == [0, 1, 2]
    assert list(pareto_front(x, y, False)) == [0]


def test_no_eval_files_is_a_one_line_error(tmp_path):
    with pytest.raises(SnrtuneError, match="no eval.json"):
        build_report(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert cli.main(["report", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


def test_labels_that_would_overprint_are_grouped_for_stacking():
    """Adapter runs at score 0 with nearly equal memory form one group, chained in x order (their stacked labels
    read left to right); points far apart keep their own labels."""
    x = [0.51, 0.50, 0.60, 1.40, 0.95, 0.80]
    y = [0.00, 0.00, 0.00, 0.95, 0.90, 0.00]
    assert label_groups(x, y) == [[1, 0, 2, 5], [4], [3]]  # 0.80 is near 0.60, the group's last point
    assert label_groups([1.0], [2.0]) == [[0]]
    assert label_groups([1.0, 1.0], [2.0, 2.0]) == [[0, 1]]  # identical points: no zero-range division


def test_report_shows_each_methods_settings_and_the_sweep_with_the_chosen_rate(tmp_path):
    res = Results(tmp_path / "results")
    res.add("tiny", "base", bernoulli(0.1, 60, seed=1))
    res.add("tiny", "full", _toolcall("full", 0), seed=0)
    res.add("tiny", "lora", _toolcall("lora", 0), seed=0)
    for folder, lr, setup in (("x2", 2e-4, {}), ("x3", 3e-3, {"lora_r": 16, "lora_alpha": 32, "lora_scale": 2.0})):
        path = tmp_path / "results" / folder / "b.json"
        record = json.loads(path.read_text())
        record.update(config={"learning_rate": lr, "per_device_train_batch_size": 8,
                              "gradient_accumulation_steps": 1, "max_seq_length": 256},
                      setup={"world_size": 1, **setup}, details={"global_step": 24})
        path.write_text(json.dumps(record))
    candidates = [{"learning_rate": 1e-3, "eval_loss": 0.0686, "chosen": False},
                  {"learning_rate": 3e-3, "eval_loss": 0.0324, "chosen": True}]
    (tmp_path / "results" / "x3" / "sweep.json").write_text(json.dumps({"candidates": candidates}))
    out = tmp_path / "report"
    build_report(tmp_path / "results", out)
    summary = (out / "summary.md").read_text()
    assert "| full | 0 | 0.0002 | – | – | – | 24 | – | 8 | 256 |" in summary
    assert "| lora | 0 | 0.003 (sweep) | 16 | 32 | 2 | 24 | – | 8 | 256 |" in summary
    assert "| lora | 0 | 0.001 | 0.0686 |  |" in summary and "| lora | 0 | 0.003 | 0.0324 | ✓ |" in summary
    page = (out / "report.html").read_text()
    assert "Learning-rate sweep" in page and "Training settings" in page


def _costed_results(root):
    """base, spectrum-t25, lora and qlora (seed 0), with GPU seconds and peak allocated memory in metrics.json."""
    res = Results(root)
    res.add("tiny", "base", bernoulli(0.1, 60, seed=1))
    costs = {}
    for method, t, gpu_seconds, allocated in (("spectrum", 25, 7200.0, 1.5e9), ("lora", None, 5400.0, 1.0e9),
                                              ("qlora", None, 9000.0, 0.5e9)):
        run = res.add("tiny", method, _toolcall(method, 0), t=t, seed=0)
        costs[run["id"]] = {"gpu_seconds": gpu_seconds, "cpu_seconds": 0.0, "peak_allocated_bytes": allocated,
                            "peak_reserved_bytes": 1.2 * allocated}
    for path in root.glob("x*/b.json"):
        record = json.loads(path.read_text())
        record.update(costs[record["run"]["id"]])
        path.write_text(json.dumps(record))
    return root


def test_gpu_hours_column_and_benchmarks(tmp_path):
    """GPU-hours = gpu_seconds / 3600: spectrum 2, lora 1.5, qlora 2.5; a benchmark TSV joins its run."""
    results = _costed_results(tmp_path / "results")
    spectrum_tsv = tmp_path / "spectrum.tsv"
    spectrum_tsv.write_text("s\th:m:s\tmax_rss\tcpu_time\n130.5\t0:02:10\t2048.0\t120.0\n")
    out = build_report(results, tmp_path / "r", benchmarks=[f"tiny/spectrum-t25-s0={spectrum_tsv}"])
    text = (out / "summary.md").read_text()
    assert "GPU-hours ↓" in text
    lines = {}
    for line in text.splitlines():  # the first table: scores and costs (the settings table follows)
        if line.startswith("| "):
            lines.setdefault(line.split("|")[1].strip(), line)
    assert "| 2 |" in lines["spectrum-t25"] and "| **1.5** |" in lines["lora"] and "| 2.5 |" in lines["qlora"]
    runs = pd.read_csv(out / "runs.csv")
    assert set(runs[runs.run == "tiny/spectrum-t25-s0"].job_wall_s) == {130.5}
    assert runs[runs.run == "tiny/lora-s0"].job_wall_s.isna().all()
    assert set(runs[runs.run == "tiny/qlora-s0"].peak_allocated_bytes) == {0.5e9}


def test_files_are_exactly_what_the_report_reads(tmp_path):
    """Given --files, the lora and qlora runs lying next to them stay out of the report."""
    results = _costed_results(tmp_path / "results")
    chosen = [str(p) for p in results.glob("x*/*.json")
              if json.loads(p.read_text())["run"]["method"] in ("base", "spectrum")]
    (results / "config.json").write_text(json.dumps({"hidden_size": 8}))
    out = tmp_path / "r"
    assert cli.main(["report", "--files", *chosen, "--out", str(out)]) == 0
    runs = pd.read_csv(out / "runs.csv")
    assert set(runs.variant) == {"base", "spectrum-t25"}
    with pytest.raises(SnrtuneError, match=r"--files: '.*config.json' is not an eval.json"):
        build_report(None, tmp_path / "r2", files=[*chosen, str(results / "config.json")])
    assert not (tmp_path / "r2").exists()


def _hits(k: int, n: int) -> list[float]:
    return [1.0] * k + [0.0] * (n - k)


def test_sweep_candidates_get_a_learning_forgetting_plot_and_are_never_ranked(tmp_path):
    """Base: toolcall 6/60, retention 48/80, word perplexity 50. lora's candidates (seed 0, seed 1):
    lr 1e-3: toolcall 18/60, 24/60; retention 48/80, 44/80; perplexity 50, 54
      gain 0.35 − 0.1 = 0.25; retention change (0.575 − 0.6, −(52 − 50)) → mean −1.0125
    lr 3e-3 (picked by both seeds): toolcall 30/60, 36/60; retention 40/80, 40/80; perplexity 55, 57
      gain 0.55 − 0.1 = 0.45; retention change (0.5 − 0.6, −(56 − 50)) → mean −3.05
    full has one evaluated candidate: no line."""
    from snrtune.report.discovery import discover
    from snrtune.report.report import analyse

    root = tmp_path / "results"
    res = Results(root)
    res.add("tiny", "base", _hits(6, 60), retention=_hits(48, 80), ppl=ppl_pairs(50.0, 1))
    for seed, tool, ret, ppl in ((0, 30, 40, 55.0), (1, 36, 40, 57.0)):
        res.add("tiny", "lora", _hits(tool, 60), retention=_hits(ret, 80), ppl=ppl_pairs(ppl, seed), seed=seed,
                config={"learning_rate": 3e-3})
        res.add_candidate("tiny", "lora", 3e-3, _hits(tool, 60), _hits(ret, 80), ppl_pairs(ppl, seed), seed=seed)
    for seed, tool, ret, ppl in ((0, 18, 48, 50.0), (1, 24, 44, 54.0)):
        res.add_candidate("tiny", "lora", 1e-3, _hits(tool, 60), _hits(ret, 80), ppl_pairs(ppl, seed), seed=seed)
    res.add("tiny", "full", _hits(12, 60), seed=0, config={"learning_rate": 2e-4})
    res.add_candidate("tiny", "full", 2e-4, _hits(40, 60), _hits(10, 80), ppl_pairs(90.0, 0), seed=0)

    frame = analyse(discover(root))["candidates"]
    frame = frame[frame.retention_task == "snrtune_retention"].reset_index(drop=True)
    assert list(frame.variant) == ["lora", "lora"] and list(frame.learning_rate) == [1e-3, 3e-3]
    assert list(frame.n_seeds) == [2, 2] and list(frame.picked_by) == [0, 2]
    assert frame.target_gain.tolist() == pytest.approx([0.25, 0.45])
    frame = analyse(discover(root))["candidates"]
    # one row per retention task, in that task's own units (never an accuracy averaged with a perplexity)
    by_task = frame.pivot(index="learning_rate", columns="retention_task", values="retention_change")
    assert by_task["snrtune_retention"].tolist() == pytest.approx([-0.025, -0.1])
    assert by_task["snrtune_ppl"].tolist() == pytest.approx([-2.0, -6.0])

    out = build_report(root, tmp_path / "report")
    png = (out / "learning_forgetting_tiny.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(list(out.glob("*.png")))
    assert "candidates are never ranked" in page
    # the candidates' evaluations are not runs: lora's score is its two picked runs' (30/60, 36/60), full's 12/60
    runs = pd.read_csv(out / "runs.csv")
    assert sorted(set(runs.run)) == ["tiny/base", "tiny/full-s0", "tiny/lora-s0", "tiny/lora-s1"]
    assert len(runs) == 4 * 3
    scores = pd.read_csv(out / "scores.csv").set_index(["variant", "task"])
    assert scores.loc[("lora", "snrtune_toolcall"), "score"] == pytest.approx(0.55)
    assert scores.loc[("full", "snrtune_toolcall"), "score"] == pytest.approx(0.2)


def test_a_sweep_candidate_without_its_learning_rate_is_a_one_line_error(tmp_path):
    from snrtune.report.discovery import collect

    run = Results(tmp_path).add_candidate("tiny", "lora", 1e-3, _hits(6, 60), _hits(48, 80), ppl_pairs(50.0, 1),
                                          seed=0)
    path = tmp_path / "x1" / "a.json"
    record = json.loads(path.read_text())
    record["run"] = {**run, "learning_rate": None}
    path.write_text(json.dumps(record))
    with pytest.raises(SnrtuneError, match=r"x1/a.json: run.learning_rate is None: a sweep candidate's evaluation"):
        collect([path])
