"""Each method's own settings, the learning-rate sweep and the selection criteria's controls in the workflow config:
which runs exist, which flags each training job gets, and the DAG Snakemake plans from them."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest
import yaml

from snrtune.workflow.flags import report_flags, settings_flags, train_flags
from snrtune.workflow.plan import (learning_rates, method_settings, runs, selection_file, sweep_candidates, swept,
                                   train_config_files, train_command)
from snrtune.workflow.preflight import preflight
from snrtune.workflow.schema import validate_config
from snrtune.errors import SnrtuneError
from snrtune.training.settings import parse_set_flags
from workflow_project import SCHEMA, job_counts, minimal, snakemake


def config_with(**extra):
    return validate_config(minimal(**extra), SCHEMA)


def assignments(flags: str) -> dict:
    words = shlex.split(flags)
    return parse_set_flags([words[i + 1] for i, w in enumerate(words) if w == "--set"]) or {}


def test_a_method_gets_its_own_settings_and_a_control_those_of_the_method_it_mirrors():
    config = config_with(methods=["spectrum", "spectrum-random", "lora", "full"],
                         train={"method_settings": {"lora": {"learning_rate": "3e-3", "lora_r": 16, "lora_alpha": 32},
                                                    "spectrum": {"learning_rate": 1.0e-4}}})
    assert assignments(settings_flags(config, "lora")) == {"learning_rate": 3e-3, "lora_r": 16, "lora_alpha": 32}
    assert assignments(settings_flags(config, "spectrum-random")) == {"learning_rate": 1e-4}
    assert settings_flags(config, "full") == ""  # the shared training config alone


def test_learning_rate_candidates_make_a_sweep_and_one_candidate_is_the_rate():
    config = config_with(methods=["lora", "qlora", "full"],
                         train={"learning_rates": {"lora": [1.0e-3, "3e-3"], "all": [2.0e-4]}})
    assert swept(config, "lora-s0") and not swept(config, "full-s0")
    assert sweep_candidates(config, "m", "lora-s0") == ["results/m/sweep/lora-s0/lr0.001",
                                                           "results/m/sweep/lora-s0/lr0.003"]
    assert assignments(settings_flags(config, "lora", lr=3e-3)) == {"learning_rate": 3e-3}
    assert assignments(settings_flags(config, "qlora")) == {"learning_rate": 2e-4}  # from `all`


def test_controls_run_at_their_own_t_values_with_a_seeded_random_selection():
    config = config_with(methods=["spectrum", "full"], top_percent=[25, 50], seeds=[0, 1],
                         selection={"criteria": ["snr", "random"], "criteria_top_percent": [25]})
    assert runs(config) == ["spectrum-t25-s0", "spectrum-t25-s1", "spectrum-t50-s0", "spectrum-t50-s1",
                               "spectrum-random-t25-s0", "spectrum-random-t25-s1", "full-s0", "full-s1"]
    assert selection_file("m", "spectrum-random-t25-s1") == "results/m/select/t25-random-s1.yaml"
    assert selection_file("m", "spectrum-t50-s1") == "results/m/select/t50.yaml"
    assert selection_file("m", "full-s1") is None
    # a control listed in methods runs as well (laser-qlora's are listed, never derived), each run once
    listed = config_with(methods=["spectrum", "spectrum-random", "laser-qlora", "laser-qlora-kappa"],
                         top_percent=[25], selection={"criteria": ["snr", "random", "kappa"]})
    assert runs(listed) == ["spectrum-t25-s0", "spectrum-random-t25-s0", "spectrum-kappa-t25-s0",
                               "laser-qlora-t25-s0", "laser-qlora-kappa-t25-s0"]
    assert selection_file("m", "laser-qlora-kappa-t25-s0") == "results/m/select/t25-kappa-s0.yaml"


def test_the_shipped_config_runs_todays_methods_and_the_criteria_overlay_every_criterion():
    """config/config.yaml: the random control at t=25 beside every method (the runs of the DAG before the criteria
    table); config/criteria.yaml on top: spectrum at t=25 by every criterion."""
    root = Path(__file__).resolve().parents[2]
    shipped = yaml.safe_load((root / "config" / "config.yaml").read_text())
    config = validate_config(shipped, SCHEMA, workflow_dir=root)
    assert runs(config) == ["spectrum-t25-s0", "spectrum-t50-s0", "spectrum-random-t25-s0", "qlora-s0",
                               "laser-qlora-t25-s0", "laser-qlora-t50-s0", "lora-s0", "full-s0"]
    overlay = yaml.safe_load((root / "config" / "criteria.yaml").read_text())
    study = validate_config({**yaml.safe_load((root / "config" / "config.yaml").read_text()), **overlay}, SCHEMA,
                               workflow_dir=root)
    assert runs(study) == ["spectrum-t25-s0"] + [f"spectrum-{c}-t25-s0" for c in
                                                     ("random", "lowest-snr", "kappa", "alpha", "position")]


@pytest.mark.parametrize("train, extra, message", [
    ({"method_settings": {"lora": {"learning_rate": "fast"}}}, {}, "train.method_settings.lora.learning_rate"),
    ({"method_settings": {"lora": {"max_steps": 10}}}, {}, "unknown key"),  # what defines the budget stays equal
    ({"method_settings": {"dora": {}}}, {}, "dora"),
    ({"learning_rates": {"lora": [1.0e-3, 1.0e-3]}}, {}, "listed twice"),
    ({"learning_rates": {"lora": [-1]}}, {}, "train.learning_rates.lora"),
    ({"learning_rates": {"lora": [1.0e-3]}, "method_settings": {"lora": {"learning_rate": 2.0e-3}}}, {},
     "in one place"),
    ({}, {"selection": {"criteria_top_percent": [10]}}, "'selection.criteria_top_percent': \\[10\\] not in top_percent"),
    ({}, {"control_top_percent": [25]}, "'control_top_percent': renamed; expected selection.criteria_top_percent"),
    ({}, {"selection": {"criteria": ["random"]}}, "'selection.criteria'"),  # snr is always one of them
    ({}, {"methods": ["lora"], "selection": {"criteria": ["snr", "kappa"]}},
     "'selection.criteria': kappa train controls of spectrum, which is not in methods"),
])
def test_bad_method_settings_name_the_key(train, extra, message):
    with pytest.raises(SnrtuneError, match=message):
        config_with(train=train, **extra)


def test_dry_run_plans_candidates_pick_and_the_control(tmp_path):
    config = {"models": {"m": {"source": "org/model"}}, "methods": ["spectrum", "lora"],
              "selection": {"criteria": ["snr", "random"], "criteria_top_percent": [50]},
              "top_percent": [25, 50], "evaluate": {"base": False},
              "train": {"learning_rates": {"lora": [1.0e-3, 3.0e-3]}}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    fake = tmp_path / "fake" / "vllm"  # the pre-flight refuses eval_backend vllm where vllm is not installed
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(fake.parent), os.environ.get("PYTHONPATH")]))}
    out = snakemake("-n", "-p", "--cores", "1", "--configfile", path, cwd=tmp_path, env=env).stdout
    counts = job_counts(out)
    assert counts["train_candidate"] == 2 and counts["pick"] == 1 and counts["select_control"] == 1
    assert counts["train"] == 3  # spectrum t25, t50 and its control at t50
    assert "--top-percent 50 --criterion random --seed 0 --out results/m/select/t50-random-s0.yaml" in out
    assert ("snrtune pick results/m/sweep/lora-s0/lr0.001 results/m/sweep/lora-s0/lr0.003 "
            "--out results/m/runs/lora-s0") in out
    assert "--out results/m/sweep/lora-s0/lr0.003" in out and "--set learning_rate=0.003" in out


def test_laser_qlora_takes_the_rank_and_alpha_of_the_method_it_matches():
    qlora = {"learning_rate": 3.0e-3, "lora_r": 16, "lora_alpha": 32}
    config = config_with(methods=["qlora", "laser-qlora", "laser-qlora-random"],
                         train={"laser_qlora_match_params_of": "qlora",
                                "method_settings": {"qlora": qlora, "laser-qlora": {"learning_rate": 2.0e-3}}})
    assert assignments(settings_flags(config, "laser-qlora")) == {"learning_rate": 2e-3, "lora_r": 16,
                                                                     "lora_alpha": 32}
    assert assignments(settings_flags(config, "laser-qlora-random")) == {"learning_rate": 2e-3, "lora_r": 16,
                                                                            "lora_alpha": 32}
    with pytest.raises(SnrtuneError, match="takes lora_r, lora_alpha, use_rslora from train.method_settings.qlora"):
        config_with(train={"laser_qlora_match_params_of": "qlora",
                           "method_settings": {"qlora": qlora, "laser-qlora": {"lora_r": 8}}})


@pytest.mark.parametrize("train_yaml, data, message", [
    ("learning_rate: fast\n", None, "key 'learning_rate'"),
    ("per_device_train_batch_size: 0\n", None, "key 'per_device_train_batch_size'"),
    (None, '{"instruction": "a", "output": "b"}\n\n', "row 2 is a blank line"),
    (None, '{"instruction": "a", "output": null}\n', "field 'output' is null"),
])
def test_bad_settings_or_data_stop_the_workflow_before_any_job(tmp_path, train_yaml, data, message):
    train = tmp_path / "train.yaml"
    train.write_text(train_yaml or "max_steps: 2\n")
    data_file = tmp_path / "d.jsonl"
    data_file.write_text(data or '{"instruction": "a", "output": "b"}\n')
    config = {"models": {"m": {"source": "org/model"}}, "methods": ["lora", "full"],
              "data": {"train": str(data_file)}, "train": {"config": str(train)}}
    with pytest.raises(SnrtuneError, match=message):
        preflight(config_with(**{k: v for k, v in config.items() if k != "models"}))
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = snakemake("-n", "--cores", "1", "--configfile", path, cwd=tmp_path, check=False)
    assert proc.returncode != 0 and message.split("'")[0] in proc.stderr + proc.stdout
    assert "rule fetch" not in proc.stdout and not (tmp_path / "results").exists()


def test_a_method_setting_the_trainer_would_refuse_stops_the_workflow(tmp_path):
    """A method's own settings are read with the trainer's checks when the config is read (the schema and the
    check come from the same field): lora_dropout 1.0, outside [0, 1), stops the workflow naming the key."""
    with pytest.raises(SnrtuneError, match=r"^config key 'train.method_settings.lora.lora_dropout': "):
        config_with(methods=["lora"], train={"method_settings": {"lora": {"lora_dropout": 1.0}}})
    with pytest.raises(SnrtuneError, match=r"^config key 'train.method_settings.lora.lora_alpha': expected a "
                                           r"positive number, got the string 'big'$"):
        config_with(methods=["lora"], train={"method_settings": {"lora": {"lora_alpha": "big"}}})


def test_lm_eval_prompt_options_reach_the_evaluate_command_and_bad_combinations_stop_the_workflow(tmp_path):
    """evaluate.{fewshot_as_multiturn, system_instruction, gen_kwargs, max_batch_size} become `snrtune evaluate`
    flags (a system prompt with quotes and $ arrives as one word); the combinations it would refuse are
    refused when the config is read, in one line naming the key."""
    prompt = "Answer briefly (one word!): it's \"short\", isn't it? [yes/no] #1 * ~"
    config = {"models": {"m": {"source": "org/model"}}, "methods": ["full"],
              "evaluate": {"base": True, "tasks": [{"name": "gsm8k"}], "batch_size": "auto", "max_batch_size": 8,
                           "fewshot_as_multiturn": False, "system_instruction": prompt,
                           "gen_kwargs": {"max_gen_toks": 64, "do_sample": False}}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    out = snakemake("-n", "-p", "--cores", "1", "--configfile", path, cwd=tmp_path).stdout
    line = next(x for x in out.splitlines() if "snrtune evaluate" in x and "eval/base.json" in x)
    words = shlex.split(line[line.index("snrtune evaluate"):])
    value = {w: words[i + 1] for i, w in enumerate(words[:-1]) if w.startswith("--")}
    assert value["--system-instruction"] == prompt and value["--max-batch-size"] == "8"
    assert value["--gen-kwargs"] == '{"do_sample":false,"max_gen_toks":64}' and value["--batch-size"] == "auto"
    assert "--no-fewshot-as-multiturn" in words
    assert "fewshot-as-multiturn" not in line.replace("--no-fewshot-as-multiturn", "")
    plain = {"models": {"a": {"source": "o/a"}, "b": {"source": "o/b", "chat_template": False}}}
    with pytest.raises(SnrtuneError, match=r"^config key 'evaluate.fewshot_as_multiturn': .*models b have chat"):
        validate_config({**plain, "evaluate": {"fewshot_as_multiturn": True}}, SCHEMA)
    assert validate_config({**plain, "evaluate": {"fewshot_as_multiturn": False}}, SCHEMA)
    with pytest.raises(SnrtuneError, match=r"^config key 'evaluate.max_batch_size': .*got 4"):
        validate_config({**plain, "evaluate": {"batch_size": 4, "max_batch_size": 8}}, SCHEMA)
    with pytest.raises(SnrtuneError, match="^config key 'evaluate.system_instruction': blank"):
        validate_config({**plain, "evaluate": {"system_instruction": "  "}}, SCHEMA)
    with pytest.raises(SnrtuneError, match="^config key 'evaluate.system_instruction'"):
        validate_config({**plain, "evaluate": {"system_instruction": "pay $5; then"}}, SCHEMA)
    with pytest.raises(SnrtuneError, match="gen_kwargs"):
        validate_config({**plain, "evaluate": {"gen_kwargs": {"until": "$(touch x)"}}}, SCHEMA)


def test_eval_model_args_reach_lm_eval_through_the_evaluate_command(tmp_path):
    """models.NAME.eval_model_args (e.g. parallelize across a job's GPUs) and eval_backend become
    `snrtune evaluate --model-args JSON --backend …`; snrtune's own pretrained/dtype cannot be overridden."""
    config = {"models": {"m": {"source": "org/model", "eval_model_args": {"parallelize": True, "max_length": 4096},
                               "eval_backend": "vllm"}},
              "methods": ["full"], "evaluate": {"base": True}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    fake = tmp_path / "fake" / "vllm"  # the pre-flight refuses eval_backend vllm where vllm is not installed
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(fake.parent), os.environ.get("PYTHONPATH")]))}
    out = snakemake("-n", "-p", "--cores", "1", "--configfile", path, cwd=tmp_path, env=env).stdout
    assert """--model-args '{"max_length":4096,"parallelize":true}' --backend vllm""" in out
    with pytest.raises(SnrtuneError, match="eval_model_args"):
        validate_config({"models": {"m": {"source": "o/m", "eval_model_args": {"pretrained": "x"}}}}, SCHEMA)
    with pytest.raises(SnrtuneError, match="eval_model_args"):
        validate_config({"models": {"m": {"source": "o/m", "eval_model_args": {"a": "$(touch x)"}}}}, SCHEMA)


# ------------------------------------------------------------- budgets, training file lists, report, overlays

ROOT = Path(__file__).resolve().parents[2]


def test_preflight_refuses_a_batch_the_planned_gpus_do_not_divide(tmp_path):
    """train.config's 4 × 4 = 16 examples per step: a full fine-tuning job planned on 3 GPUs cannot hold it; on
    2 or 4 it can (each process then accumulates 2 or 1)."""
    train = tmp_path / "train.yaml"
    train.write_text("per_device_train_batch_size: 4\ngradient_accumulation_steps: 4\nmax_steps: 2\n")
    config = config_with(methods=["full", "lora"], train={"config": str(train)},
                         models={"m": {"source": "org/model", "resources": {"per_method": {"full": {"gpus": 3}}}}})
    with pytest.raises(SnrtuneError) as error:
        preflight(config)
    assert str(error.value).startswith(f"training config {train}: keys 'per_device_train_batch_size' × "
                                       "'gradient_accumulation_steps' = 4 × 4 = 16 examples per optimizer step do "
                                       "not split over 3 processes")
    config["models"]["m"]["resources"]["per_method"]["full"]["gpus"] = 4
    preflight(config)
    assert train_command(config, "m", "full-s0").settings(world_size=4).gradient_accumulation_steps == 1


def test_train_config_lists_reach_snrtune_train_in_merge_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a run directory elsewhere: each file is found next to the Snakefile
    config = validate_config(yaml.safe_load((ROOT / "config/paper-70b.yaml").read_text()), SCHEMA,
                                workflow_dir=ROOT)
    files = [str(ROOT / "config/train-gpu.yaml"), str(ROOT / "config/train-gpu-70b.yaml")]
    assert train_config_files(config, "Meta-Llama-3-70B") == files
    assert " ".join(f"--config {f}" for f in files) in train_flags(config, "Meta-Llama-3-70B", "full-s0")
    with pytest.raises(SnrtuneError, match=r"config key 'train.config\[1\]': file 'nope.yaml' does not exist"):
        config_with(train={"config": [files[0], "nope.yaml"]})


def test_the_70b_training_file_is_an_overlay_of_train_gpu():
    """train-gpu-70b.yaml states only what differs from train-gpu.yaml (its chat template, with the
    {% generation %} markers, is train-gpu.yaml's) and keeps its examples per optimizer step."""
    from snrtune.training.settings import examples_per_step, load_settings

    base_path, overlay_path = ROOT / "config/train-gpu.yaml", ROOT / "config/train-gpu-70b.yaml"
    base, overlay = (yaml.safe_load(p.read_text()) for p in (base_path, overlay_path))
    assert overlay and all(base.get(key) != value for key, value in overlay.items()), overlay
    merged, gpu = load_settings([str(base_path), str(overlay_path)]), load_settings(str(base_path))
    assert merged.chat_template == gpu.chat_template and "{% generation %}" in merged.chat_template
    assert examples_per_step(merged) == examples_per_step(gpu) == 16
    paper_70b = yaml.safe_load((ROOT / "config/paper-70b.yaml").read_text())
    assert paper_70b["train"]["config"] == ["config/train-gpu.yaml", "config/train-gpu-70b.yaml"]
    assert all(not m.get("train_config") for m in paper_70b["models"].values())


@pytest.mark.parametrize("name", ["paper.yaml", "paper-70b.yaml"])
def test_paper_configs_give_every_method_its_own_bracketing_grid_and_lora_shape(name):
    config = validate_config(yaml.safe_load((ROOT / "config" / name).read_text()), SCHEMA, workflow_dir=ROOT)
    for method in config["methods"]:
        rates = learning_rates(config, method)
        assert len(rates) >= 3 and rates == sorted(rates), (method, rates)
    lora_like = [m for m in config["methods"] if m in ("lora", "qlora", "laser-qlora")]
    for method in lora_like:
        assert {"lora_r", "lora_alpha"} <= set(method_settings(config, method)), method
    assert "full" in config["methods"] and "spectrum" in config["methods"]


def test_the_report_section_becomes_snrtune_report_flags_and_names_a_bad_task():
    config = config_with(report={"target_task": "snrtune_toolcall", "retention_tasks": ["snrtune_retention",
                                                                                        "snrtune_ppl"]})
    assert report_flags(config) == "--target-task snrtune_toolcall --retention-tasks snrtune_retention,snrtune_ppl"
    assert report_flags(config_with()) == ""  # snrtune report's own defaults
    assert report_flags(config_with(report={"margin": 0.03})) == "--margin 0.03"
    assert report_flags(config_with(report={"margin_of_gain": 0.2})) == "--margin-of-gain 0.2"
    with pytest.raises(SnrtuneError, match=r"^config key 'report.margin_of_gain': set together with report.margin"):
        config_with(report={"margin": 0.03, "margin_of_gain": 0.2})
    with pytest.raises(SnrtuneError, match=r"^config key 'report.margin_of_gain': 1.5 is greater than"):
        config_with(report={"margin_of_gain": 1.5})
    with pytest.raises(SnrtuneError, match=r"^config key 'report.target_task': 'arc_easy' is not in evaluate.tasks"):
        config_with(report={"target_task": "arc_easy"})
    with pytest.raises(SnrtuneError, match=r"^config key 'report.retention_tasks': 'snrtune_toolcall' is the target"):
        config_with(report={"target_task": "snrtune_toolcall", "retention_tasks": ["snrtune_toolcall"]})


def test_seeds_and_sweep_are_overlays_of_the_default_config(tmp_path):
    """Each states only what differs from config/config.yaml; Snakemake merges them after it (the sweep deletes
    the presets' rates with null) and plans three seeds, or three candidates per method with a pick each."""
    assert yaml.safe_load((ROOT / "config/seeds.yaml").read_text()) == {"seeds": [0, 1, 2]}
    sweep_overlay = yaml.safe_load((ROOT / "config/sweep.yaml").read_text())
    assert set(sweep_overlay) == {"train"} and set(sweep_overlay["train"]) == {"method_settings", "learning_rates"}
    files = [ROOT / "config/config.yaml", ROOT / "config/seeds.yaml"]
    seeds = job_counts(snakemake("-n", "--configfile", *files, "--directory", tmp_path / "s", cwd=ROOT).stdout)
    one = job_counts(snakemake("-n", "--configfile", files[0], "--directory", tmp_path / "d", cwd=ROOT).stdout)
    assert seeds["train"] == 3 * one["train"] and seeds["evaluate"] == 3 * (one["evaluate"] - 1) + 1
    files[1] = ROOT / "config/sweep.yaml"
    out = snakemake("-n", "-p", "--configfile", *files, "--directory", tmp_path / "w", cwd=ROOT).stdout
    sweep = job_counts(out)  # every method has a grid (the control takes spectrum's): each run is picked
    assert sweep["pick"] == one["train"] and sweep["train_candidate"] == 3 * one["train"] and "train" not in sweep
    assert "lr0.01" in out and "--set learning_rate=0.003" in out
