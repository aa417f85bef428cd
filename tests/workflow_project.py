"""The workflow tests' shared pieces: the repository's Snakefile and schema, `snakemake` in a working
directory, the job table of a (dry) run, a minimal config, and a tiny project (data, training settings, an lm-eval
task and a config for a tiny model)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from snrtune.workflow.schema import load_schema

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = ROOT / "workflow" / "Snakefile"
SCHEMA = load_schema(ROOT / "workflow/schemas/config.schema.yaml")
FAKE_SLURM = Path(__file__).parent / "fake_slurm"
VENV_BIN = Path(sys.executable).parent


def snakemake(*args, cwd, path_first=(), env=None, check=True, snakefile=SNAKEFILE):
    """Run `python -m snakemake -s Snakefile ARGS` in ``cwd`` with the venv's bin first on PATH (``snakefile=None``:
    without -s, so Snakemake finds the working directory's workflow/Snakefile itself)."""
    path = os.pathsep.join([*map(str, path_first), str(VENV_BIN), os.environ["PATH"]])
    chosen = ["-s", str(snakefile)] if snakefile else []
    proc = subprocess.run([sys.executable, "-m", "snakemake", *chosen, *map(str, args)],
                          cwd=cwd, env={**os.environ, "PATH": path, **(env or {})}, text=True,
                          capture_output=True, timeout=1200)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(map(str, args))} failed:\n{proc.stdout[-5000:]}\n{proc.stderr[-8000:]}")
    return proc


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a (dry) run: {rule: count}."""
    table = output[output.index("Job stats:"):]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m[1] != "total"}


def minimal(**extra) -> dict:
    return {"models": {"m": {"source": "org/model"}}, **extra}



TINY_TRAIN = {"max_steps": 2, "per_device_train_batch_size": 2, "per_device_eval_batch_size": 2,
              "gradient_accumulation_steps": 1, "warmup_steps": 0, "max_seq_length": 64, "val_fraction": 0.25,
              "save_steps": 1000, "lora_r": 4, "lora_alpha": 8}


def tiny_task(directory: Path) -> Path:
    """An lm-eval task directory with one multiple-choice task, tiny_sums."""
    directory.mkdir(parents=True, exist_ok=True)
    docs = [{"question": f"{i} plus {i} is", "choices": [str(2 * i), str(2 * i + 1)], "answer": 0} for i in range(4)]
    (directory / "sums.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (directory / "tiny_sums.yaml").write_text(
        "task: tiny_sums\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: sums.jsonl\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{question}}'\n"
        "doc_to_choice: '{{choices}}'\ndoc_to_target: '{{answer}}'\nmetric_list:\n  - metric: acc\n")
    return directory


def tiny_project(root: Path, model_dir: Path, name: str = "config.yaml", **overrides) -> Path:
    """A working directory with tiny data, tiny training hyperparameters and a config ``name`` for the tiny model.

    The data, hyperparameter and task files are written once (a rewrite would make every job out of date).
    """
    config_file = root / name
    if (root / "train.jsonl").exists():
        config = yaml.safe_load((root / "config.yaml").read_text())
        config.update(overrides)
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        return config_file
    root.mkdir(parents=True, exist_ok=True)
    chats = [{"messages": [{"role": "user", "content": f"What is {i} plus {i}?"},
                           {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."}]} for i in range(8)]
    (root / "train.jsonl").write_text("".join(json.dumps(c) + "\n" for c in chats))
    (root / "train.yaml").write_text(yaml.safe_dump(TINY_TRAIN))
    config = {
        "models": {"tiny": {"source": str(model_dir), "dtype": "float32", "chat_template": True, "device": "cpu",
                            "resources": {"threads": 1, "mem_mb": 1000, "train_mem_mb": 2000,
                                          "runtime": 10, "train_runtime": 20}}},
        "methods": ["spectrum", "qlora", "laser-qlora", "lora", "full"],
        "top_percent": [50],
        "seeds": [0],
        "data": {"train": str(root / "train.jsonl")},
        "train": {"config": str(root / "train.yaml"), "laser_qlora_match_params_of": "qlora"},
        # two shipped tasks and a local one (include_path); snrtune_ppl is left out: the word perplexity
        # of a random tiny model overflows lm-eval's bootstrap stderr
        "evaluate": {"tasks": [{"name": "snrtune_toolcall", "num_fewshot": 0}, {"name": "snrtune_retention"},
                               {"name": "tiny_sums"}],
                     "limit": 2, "batch_size": 2, "include_path": str(tiny_task(root / "tasks"))},
    }
    for key, value in overrides.items():
        config[key] = value
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    return config_file
