"""Every path the workflow writes, in one place (docs/workflow.md's layout): the rules' inputs, outputs, logs
and benchmarks use these templates, and snrtune.workflow.config fills them with ``fill``.

``{model}`` is a config model name, ``{run}`` a run name (snrtune.naming), ``{t}`` a t value as in file names,
``{kind}``/``{seed}`` a control selection's kind and seed, ``{lr}`` a sweep candidate's learning rate.
"""

from __future__ import annotations

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
