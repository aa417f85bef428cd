import re
import shlex

import snrtune
from snakemake.exceptions import WorkflowError
from snakemake.settings.types import DeploymentMethod
from snrtune import method_registry, workflow_config as wc
from snrtune.errors import SnrtuneError

try:
    schema = wc.load_schema(os.path.join(workflow.basedir, "workflow", "schemas", "config.schema.yaml"))
    wc.validate_config(config, schema, workflow_dir=workflow.basedir)
    wc.preflight(config)  # training settings and data, checked before any job runs
except SnrtuneError as error:
    raise WorkflowError(f"invalid config: {error}") from None

VERSION = snrtune.__version__  # a param of every rule: a new snrtune version re-runs the steps
GROWTH = config["resources"]["growth"]
ENV = "../../envs/snrtune.yaml"

# Under --sdm conda the environment holds snrtune's dependencies; the rules run snrtune from src/.
# (shell.prefix is formatted like a rule's command: a literal brace is written {{ in it, {{{{ in an f-string)
if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method:
    SRC = shlex.quote(os.path.join(workflow.basedir, "src"))
    shell.prefix(f"export PYTHONPATH={SRC}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; "
                 f'snrtune() {{{{ python -m snrtune.cli "$@"; }}}}; ')


wildcard_constraints:
    model="|".join(map(re.escape, config["models"])) or "(?!)",
    t=r"\d+(\.\d+)?",
    run=r"[a-z-]+(-t\d+(\.\d+)?)?-s\d+",


def model_cfg(wildcards):
    return config["models"][wildcards.model]


def res(wildcards, key):
    return config["models"][wildcards.model]["resources"][key]


def mem(key):
    """A resource function: the model's memory request, grown with the attempt."""
    return lambda wildcards, attempt: wc.scaled(res(wildcards, key), attempt, GROWTH)


runtime = mem  # runtime (minutes) grows the same way


def train_config(w):
    return model_cfg(w)["train_config"] or config["train"]["config"]


def train_inputs(w):
    """The model, the data and hyperparameter files when local, and the selection of a selection method."""
    inputs = {"model": f"results/{w.model}/model", "data": wc.local_files(config["data"]["train"])}
    if train_config(w):
        inputs["config"] = train_config(w)
    if wc.selection_file(w.model, w.run):
        inputs["selection"] = wc.selection_file(w.model, w.run)
    return inputs


def train_flags(w, input):
    run = wc.parse_run(w.run)
    spec = method_registry.get(run["method"])
    match = config["train"]["laser_qlora_match_params_of"] if spec.rank_matching else None
    lr = float(w.lr) if "lr" in w.keys() else None  # a sweep candidate's learning rate
    return " ".join([wc.flags(method=run["method"], seed=run["seed"], selection=input.get("selection"),
                              config=input.get("config"), stage=config["train"]["stage"],
                              max_steps=config["train"]["max_steps"], match_params_of=match,
                              resume=True),  # a requeued job continues from its last checkpoint
                     wc.settings_flags(config, run["method"], lr)])


def one_of(names):
    """A wildcard constraint matching exactly these names (nothing when there are none)."""
    return "|".join(map(re.escape, names)) or "(?!)"


def evaluated_model(w):
    """The base model for eval/base.json, else the merged run."""
    return f"results/{w.model}/model" if w.run == "base" else f"results/{w.model}/merged/{w.run}"


def evaluate_flags(w):
    ev, model = config["evaluate"], model_cfg(w)
    return wc.flags(num_fewshot=wc.num_fewshot(ev["tasks"]), limit=ev["limit"], batch_size=ev["batch_size"],
                    device=model["device"], dtype=model["dtype"], apply_chat_template=model["chat_template"],
                    include_path=ev["include_path"], log_samples=ev["log_samples"])
