"""`snrtune report` on a fixture of eval/metrics/snr/selection files placed under unhelpful paths."""

import json
import math

import pandas as pd
import pytest
import yaml

from snrtune import cli
from snrtune.errors import SnrtuneError
from snrtune.plots import label_groups, pareto_front
from snrtune.report import build_report

# variant -> seed -> (toolcall acc, retention acc, ppl word_perplexity)
SCORES = {
    ("base", None, None): {None: (0.1, 0.60, 50.0)},
    ("spectrum", 25, "spectrum-t25"): {0: (0.8, 0.58, 52.0), 1: (0.6, 0.56, 54.0)},
    ("lora", None, "lora"): {0: (0.5, 0.60, 50.5), 1: (0.5, 0.59, 50.5)},
    ("qlora", None, "qlora"): {0: (0.4, 0.61, 50.2)},
}
COST = {"spectrum": (2_000_000, 3e9, 120.0, 900.0), "lora": (300_000, 2e9, 90.0, 1100.0),
        "qlora": (300_000, 1e9, 150.0, 700.0)}


def _run(method, t, seed):
    rid = "tiny/base" if method == "base" else f"tiny/{method}" + (f"-t{t}" if t else "") + f"-s{seed}"
    return {"id": rid, "model": "tiny", "method": method, "top_percent": t, "seed": seed}


def _eval(run, toolcall, retention, ppl):
    return {"run": run, "model_form": "base" if run["method"] == "base" else "merged-full-precision",
            "results": {"snrtune_toolcall": {"acc": toolcall, "acc_stderr": 0.05, "perplexity": 3.0,
                                             "perplexity_stderr": 0.1},
                        "snrtune_retention": {"acc": retention, "acc_stderr": 0.03, "acc_norm": retention,
                                              "acc_norm_stderr": 0.03},
                        "snrtune_ppl": {"word_perplexity": ppl, "word_perplexity_stderr": None}},
            "higher_is_better": {"snrtune_toolcall": {"acc": True, "perplexity": False},
                                 "snrtune_retention": {"acc": True, "acc_norm": True},
                                 "snrtune_ppl": {"word_perplexity": False}},
            "config": {"tasks": ["snrtune"], "limit": None}, "wall_time_s": 30.0}


def _metrics(run):
    params, mem, wall, tps = COST[run["method"]]
    return {"run": run, "trainable_params": params, "total_params": 10_000_000, "peak_memory_bytes": mem,
            "wall_time_s": wall, "tokens_per_s": tps, "gpu_seconds": 2 * 3600 * wall / 120, "cpu_seconds": 0.0,
            "peak_allocated_bytes": 0.5 * mem, "peak_reserved_bytes": 0.6 * mem,
            "train_loss": [[s, 2.0 / (s + 1) + (run["seed"] or 0) * 0.01] for s in range(0, 40, 5)],
            "eval_loss": [[s, 2.2 / (s + 1)] for s in (10, 20, 30)]}


def _snr():
    types = ["self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"]
    modules = [{"name": f"model.layers.{l}.{t}", "param": f"model.layers.{l}.{t}.weight", "type": t, "layer": l,
                "expert": None, "snr": 0.1 * (l + 1) + 0.01 * i, "status": "ok"}
               for l in range(4) for i, t in enumerate(types)]
    return {"model": "tiny", "method": "gram", "modules": modules, "parameters": {}, "total_params": 10_000_000,
            "not_scannable": []}


def _selection(t):
    mods = [{"name": f"model.layers.3.{ty}", "type": ty, "layer": 3, "snr": 0.4}
            for ty in ["self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"]]
    return {"model": "tiny", "top_percent": t, "modules": mods, "unfrozen_parameters": ["^model\\.layers\\.3\\."],
            "trainable_params": 2_000_000, "total_params": 10_000_000}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    n = 0
    for (method, t, _), seeds in SCORES.items():
        for seed, scores in seeds.items():
            run = _run(method, t, seed)
            n += 1
            (root / f"x{n}").mkdir()
            (root / f"x{n}" / "a.json").write_text(json.dumps(_eval(run, *scores)))
            if method != "base":
                (root / f"x{n}" / "b.json").write_text(json.dumps(_metrics(run)))
    (root / "misc").mkdir()
    (root / "misc" / "s.json").write_text(json.dumps(_snr()))
    for t in (25, 50):
        (root / "misc" / f"sel{t}.yaml").write_text(yaml.safe_dump(_selection(t)))
    (root / "misc" / "config.json").write_text(json.dumps({"hidden_size": 8}))  # not an artifact: ignored
    (root / "misc" / "broken.json").write_text("{not json")
    (root / "misc" / "copy.json").write_text((root / "x2" / "a.json").read_text())  # same run: not another seed
    return root


@pytest.fixture(scope="module")
def report(results, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "report"
    assert cli.main(["report", str(results), "--out", str(out)]) == 0
    return out


def test_runs_csv_is_tidy(report):
    runs = pd.read_csv(report / "runs.csv")
    n_evals = sum(len(seeds) for seeds in SCORES.values())
    assert len(runs) == n_evals * 5  # acc+perplexity, acc+acc_norm, word_perplexity
    row = runs[(runs.run == "tiny/spectrum-t25-s1") & (runs.task == "snrtune_toolcall") & (runs.metric == "acc")]
    assert row.score.item() == 0.6 and row.stderr.item() == 0.05 and row.variant.item() == "spectrum-t25"
    assert row.t.item() == 25 and row.seed.item() == 1
    assert row.trainable_params.item() == 2_000_000 and row.peak_memory_bytes.item() == 3e9
    assert row.train_wall_time_s.item() == 120.0 and row.tokens_per_s.item() == 900.0
    base = runs[runs.run == "tiny/base"]
    assert base.trainable_params.isna().all()


def test_summary_means_stderrs_deltas_and_best(report):
    text = (report / "summary.md").read_text()
    lines = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    spectrum = [c.strip() for c in lines["spectrum-t25"].split("|")[2:-1]]
    # toolcall: mean(0.8, 0.6) = 0.7, stderr over seeds = std([.8, .6]) / sqrt(2) = 0.1, +0.6 vs base 0.1
    assert spectrum[0] == "**0.700 ± 0.100 (+0.6)**"
    # retention: mean(0.58, 0.56) = 0.57 (-0.03); the best retention is qlora's single seed 0.61 ± 0.03
    assert spectrum[1] == "0.570 ± 0.010 (-0.03)"
    assert "**0.610 ± 0.030 (+0.01)**" in lines["qlora"]
    # perplexity: lower is better; base 50.0 is not a method, lora 50.5 ± 0 is the best trained one
    lora = [c.strip() for c in lines["lora"].split("|")[2:-1]]
    assert lora[0] == "0.500 ± 0.000 (+0.4)"
    assert lora[2] == "50.50 ± 0.000 (+0.5)"
    assert "**1.00GB**" in lines["qlora"] and "**300.00k**" in lines["lora"]
    assert "spectrum-t25** won on snrtune_toolcall" in text
    assert "snrtune_retention acc 0.600 → 0.570 (-5.0%, lost)" in text
    assert math.isclose(0.7 - 0.5, 0.2) and "0.200 ahead of lora" in text


def test_every_plot_written_and_embedded(report):
    pngs = sorted(p.name for p in report.glob("*.png"))
    assert pngs == ["gain_vs_forgetting.png", "loss_curves.png", "quality_vs_cost.png", "scores.png",
                    "snr_heatmap_tiny_t25.png", "snr_heatmap_tiny_t50.png"]
    for name in pngs:
        data = (report / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    page = (report / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(pngs)
    assert "spectrum-t25 won on snrtune_toolcall" in page


def test_pareto_front():
    x, y = [1.0, 2.0, 3.0, 2.5], [0.5, 0.7, 0.9, 0.6]
    assert list(pareto_front(x, y, True)) == [0, 1, 2]
    assert list(pareto_front(x, y, False)) == [0]


def test_no_eval_files_is_a_one_line_error(tmp_path):
    with pytest.raises(SnrtuneError, match="no eval.json"):
        build_report(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_labels_that_would_overprint_are_grouped_for_stacking():
    """Adapter runs at score 0 with nearly equal memory form one group, chained in x order (their stacked labels
    read left to right); points far apart keep their own labels."""
    x = [0.51, 0.50, 0.60, 1.40, 0.95, 0.80]
    y = [0.00, 0.00, 0.00, 0.95, 0.90, 0.00]
    assert label_groups(x, y) == [[1, 0, 2, 5], [4], [3]]  # 0.80 is near 0.60, the group's last point
    assert label_groups([1.0], [2.0]) == [[0]]
    assert label_groups([1.0, 1.0], [2.0, 2.0]) == [[0, 1]]  # identical points: no zero-range division


def test_gpu_hours_column_and_benchmarks(results, tmp_path):
    """GPU-hours = gpu_seconds / 3600 (2 GPUs × 3600 s × wall/120 per run): spectrum 2, lora 1.5, qlora 2.5."""
    spectrum_tsv = tmp_path / "spectrum.tsv"
    spectrum_tsv.write_text("s\th:m:s\tmax_rss\tcpu_time\n130.5\t0:02:10\t2048.0\t120.0\n")
    out = build_report(results, tmp_path / "r", benchmarks=[f"tiny/spectrum-t25-s0={spectrum_tsv}"])
    text = (out / "summary.md").read_text()
    assert "GPU-hours ↓" in text
    lines = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert "| 2 |" in lines["spectrum-t25"] and "| **1.5** |" in lines["lora"] and "| 2.5 |" in lines["qlora"]
    runs = pd.read_csv(out / "runs.csv")
    assert set(runs[runs.run == "tiny/spectrum-t25-s0"].job_wall_s) == {130.5}
    assert runs[runs.run == "tiny/lora-s0"].job_wall_s.isna().all()
    assert set(runs[runs.run == "tiny/qlora-s0"].peak_allocated_bytes) == {0.5e9}


def test_files_are_exactly_what_the_report_reads(results, tmp_path):
    """Given --files, the lora and qlora runs lying next to them stay out of the report."""
    chosen = [str(p) for p in results.glob("x*/*.json")
              if json.loads(p.read_text())["run"]["method"] in ("base", "spectrum")]
    out = tmp_path / "r"
    assert cli.main(["report", "--files", *chosen, str(results / "misc" / "s.json"), "--out", str(out)]) == 0
    runs = pd.read_csv(out / "runs.csv")
    assert set(runs.variant) == {"base", "spectrum-t25"}
    with pytest.raises(SnrtuneError, match=r"--files: '.*config.json' is not an eval.json"):
        build_report(None, tmp_path / "r2", files=[*chosen, str(results / "misc" / "config.json")])
    assert not (tmp_path / "r2").exists()
