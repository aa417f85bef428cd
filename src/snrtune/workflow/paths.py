"""Every path the workflow writes, in one place (docs/workflow.md's layout): the rules' inputs, outputs, logs
and benchmarks use these templates, and snrtune.workflow.plan fills them with ``fill``. The patterns their
wildcards match (the rules' wildcard_constraints) are here too.

``{model}`` is a config model name, ``{run}`` a run name (snrtune.naming), ``{t}`` a t value as in file names,
``{kind}``/``{seed}`` a control selection's kind and seed, ``{lr}`` a sweep candidate's learning rate.
"""

from __future__ import annotations

import re

from snrtune import naming

RESULTS = "results"

MODEL = "results/{model}/model"
SNR = "results/{model}/scan/snr.json"
SELECTION = "results/{model}/select/t{t}.yaml"
CONTROL_SELECTION = "results/{model}/select/t{t}-{kind}-s{seed}.yaml"
RUN = "results/{model}/runs/{run}"
SWEEP_CANDIDATE = "results/{model}/sweep/{run}/lr{lr}"
SWEEP_MERGED = "results/{model}/sweep-merged/{run}/lr{lr}"  # evaluate.sweep_candidates: every candidate
SWEEP_EVAL = "results/{model}/sweep-eval/{run}/lr{lr}.json"
MERGED = "results/{model}/merged/{run}"
EVAL = "results/{model}/eval/{run}.json"
REPORT = "results/report"
PREFETCH_DATA = "results/prefetch/data.json"
PREFETCH_TASKS = "results/prefetch/tasks.json"


def benchmark(step: str, name: str = "", model: str = "{model}") -> str:
    """Snakemake's benchmark TSV of a step: results/{model}/benchmarks/STEP[/NAME].tsv (the report's is
    results/benchmarks/report.tsv: ``model=None``)."""
    base = f"{RESULTS}/benchmarks" if model is None else f"{RESULTS}/{model}/benchmarks"
    return f"{base}/{step}/{name}.tsv" if name else f"{base}/{step}.tsv"


def log(step: str, name: str = "", model: str = "{model}") -> str:
    """A step's log: logs/{model}/STEP[/NAME].log (``model=None``: logs/STEP.log)."""
    base = "logs" if model is None else f"logs/{model}"
    return f"{base}/{step}/{name}.log" if name else f"{base}/{step}.log"


def fill(template: str, **values) -> str:
    """A template with its wildcards filled: ``fill(RUN, model="m", run="lora-s0")``."""
    return template.format(**values)


# --- the wildcards' patterns ------------------------------------------------------------------------------

T_PATTERN = naming.T_PATTERN  # {t}
SEED_PATTERN = r"\d+"  # {seed} of a control's selection
LR_PATTERN = r"[0-9.e+-]+"  # {lr}: a learning rate as snrtune.workflow.plan.format_lr writes it
RUN_PATTERN = naming.RUN_PATTERN  # {run}: a training run
EVALUATED_RUN_PATTERN = f"{naming.BASE_RUN}|{naming.RUN_PATTERN}"  # {run} of eval/: a training run or the base model


def one_of(names) -> str:
    """A wildcard pattern matching exactly these names (nothing when there are none)."""
    return "|".join(map(re.escape, names)) or "(?!)"
