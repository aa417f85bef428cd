import functools
import shlex

import snrtune
from snakemake.exceptions import WorkflowError
from snakemake.settings.types import DeploymentMethod
from snrtune import method_registry
from snrtune import naming
from snrtune.workflow import config as workflow_config
from snrtune.workflow import paths
from snrtune.errors import SnrtuneError
from snrtune.model_dir import PARAMS_FILE

# Paths of the workflow's own files through Snakemake's source-path mechanism (relative to this rule file),
# so they are found when the workflow is imported as a module into another one.
REPO = os.path.normpath(
    os.path.join(workflow.current_basedir.get_path_or_uri(secret_free=True), "..", "..")
)

try:
    schema = workflow_config.load_schema(
        workflow.source_path("../schemas/config.schema.yaml")
    )
    workflow_config.validate_config(config, schema, workflow_dir=REPO)
    # training settings and data, checked before any job runs; DeepSpeed where the jobs run in this environment
    workflow_config.preflight(
        config,
        packages_here=DeploymentMethod.CONDA
        not in workflow.deployment_settings.deployment_method,
    )
except SnrtuneError as error:
    raise WorkflowError(f"invalid config: {error}") from None

VERSION = (
    snrtune.__version__
)  # a param of every rule: a new snrtune version re-runs the steps
GROWTH = config["resources"]["growth"]
ENV = "../../envs/snrtune.yaml"
# Every step but the downloads on the login node runs offline, from the shared cache (docs/workflow.md).
OFFLINE = workflow_config.job_env(config, offline=True)
ONLINE = workflow_config.job_env(config, offline=False)

# Under --sdm conda the environment holds snrtune's dependencies; the rules run snrtune from src/.
# (shell.prefix is formatted like a rule's command: a literal brace is written {{ in it, {{{{ in an f-string)
if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method:
    SRC = shlex.quote(os.path.join(REPO, "src"))
    shell.prefix(
        f"export PYTHONPATH={SRC}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; "
        f'snrtune() {{{{ python -m snrtune.cli "$@"; }}}}; '
    )


wildcard_constraints:
    model=paths.one_of(config["models"]),
    t=paths.T_PATTERN,
    run=paths.RUN_PATTERN,


# the run wildcard of the rules that train, merge and evaluate a swept run's candidates (and pick among them),
# and of the rule that trains every other run
SWEPT_RUN = paths.one_of(workflow_config.swept_runs(config))
UNSWEPT_RUN = paths.one_of(workflow_config.unswept_runs(config))


# Steps that need the hub (or are too small for a job) run on the login node, never as SLURM jobs.
localrules:
    all,
    fetch,
    prefetch_data,
    prefetch_tasks,
    select,
    select_control,
    pick,
    report,


def model_cfg(wildcards):
    return config["models"][wildcards.model]


def res(wildcards, key):
    return config["models"][wildcards.model]["resources"][key]


CEILING = {
    "mem_mb": config["resources"]["max_mem_mb"],
    "runtime": config["resources"]["max_runtime"],
}


def mem(key):
    """A resource function: the model's memory request, grown with the attempt up to resources.max_mem_mb."""
    return lambda wildcards, attempt: workflow_config.scaled(
        res(wildcards, key), attempt, GROWTH, CEILING["mem_mb"]
    )


def runtime(key):
    """Minutes, grown the same way up to resources.max_runtime."""
    return lambda wildcards, attempt: workflow_config.scaled(
        res(wildcards, key), attempt, GROWTH, CEILING["runtime"]
    )


def train_config(w):
    """The model's training files, in the order `snrtune train` merges them."""
    return workflow_config.train_config_files(config, w.model)


# The module prefix (when imported as a module), captured while the rules are parsed: the estimate reads
# the fetched model's parameter table where this workflow's paths really are.
PATHS = workflow.modifier.path_modifier


def train_plan(w):
    """GPUs, memory, runtime and sharding of a training job: overrides from the config, else the estimate
    (snrtune.workflow.resources) from the fetched parameter table or the config's params_b. Computed once per
    job and state of the fetched model (the rule's params and resources all ask; the fetch may land between).
    """
    model_dir = str(
        PATHS.replace_prefix(paths.fill(paths.MODEL, model=w.model), "input")
    )
    table = os.path.join(model_dir, PARAMS_FILE)
    return _train_plan(
        w.model,
        w.run,
        model_dir,
        os.path.getmtime(table) if os.path.exists(table) else None,
    )


@functools.cache
def _train_plan(model, run, model_dir, table_mtime):
    return workflow_config.train_resources(config, model, run, model_dir)


def train_resource(key, grow=False):
    if grow:
        return lambda w, attempt: workflow_config.scaled(
            train_plan(w)[key], attempt, GROWTH, CEILING[key]
        )
    return lambda w: train_plan(w)[key]


def train_inputs(w):
    """The model, the data and hyperparameter files when local (a hub dataset: its prefetch record), and
    the selection of a selection method."""
    inputs = {
        "model": paths.fill(paths.MODEL, model=w.model),
        "data": workflow_config.local_files(config["data"]["train"]),
    }
    if workflow_config.hub_dataset(config):
        inputs["prefetched"] = paths.PREFETCH_DATA
    if train_config(w):
        inputs["config"] = train_config(w)
    if workflow_config.selection_file(w.model, w.run):
        inputs["selection"] = workflow_config.selection_file(w.model, w.run)
    return inputs


def train_flags(w):
    """Flags from the wildcards and the config only (never from `input`: Snakemake does not compare params
    derived from input, so a changed value would not re-run the step); ``lr``: a sweep candidate's.
    """
    lr = w.lr if "lr" in w.keys() else None
    return workflow_config.train_flags(config, w.model, w.run, lr)


def launcher(w):
    """`snrtune` or `torchrun … -m snrtune.cli` (a tracked param: the number of processes sets the global batch)."""
    return workflow_config.launcher(train_plan(w)["gpus"])


def strategy(w):
    return train_plan(w)["strategy"]


def sharding(w, input):
    """--deepspeed REPO/config/zero3*.json (untracked: taking `input`, so moving the clone re-runs nothing;
    the tracked `strategy` param says which)."""
    return workflow_config.sharding_flags(train_plan(w)["strategy"], REPO)


def evaluated_model(w):
    """The base model for eval/base.json, a merged sweep candidate for sweep-eval/, else the merged run."""
    if w.run == naming.BASE_RUN:
        return paths.fill(paths.MODEL, model=w.model)
    if "lr" in w.keys():
        return paths.fill(paths.SWEEP_MERGED, model=w.model, run=w.run, lr=w.lr)
    return paths.fill(paths.MERGED, model=w.model, run=w.run)


def evaluate_inputs(w):
    inputs = {"model": evaluated_model(w)}
    if workflow_config.hub_tasks(config):
        inputs["prefetched"] = paths.PREFETCH_TASKS
    return inputs


def evaluate_flags(w):
    ev, model = config["evaluate"], model_cfg(w)
    return workflow_config.flags(
        num_fewshot=workflow_config.num_fewshot(ev["tasks"]),
        limit=workflow_config.limit_flag(ev["limit"]),
        batch_size=ev["batch_size"],
        device=model["device"],
        dtype=model["dtype"],
        apply_chat_template=model["chat_template"],
        include_path=ev["include_path"],
        log_samples=ev["log_samples"],
        model_args=workflow_config.model_args_flag(model["eval_model_args"]),
        backend=model["eval_backend"] if model["eval_backend"] != "hf" else None,
        **workflow_config.lm_eval_options(ev),
    )


def job_env_param(env):
    """A param holding the shell prefix of a step (HF_HOME, offline switches). It takes `input`, so Snakemake
    does not track it: the environment does not change a step's result, and a new cache path re-runs nothing.
    """
    return lambda wildcards, input: env
