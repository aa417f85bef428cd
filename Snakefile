# snrtune: which fine-tuning method wins for this model and this data?
#   snakemake --cores 2                                   # the embedded default (config/config.yaml)
#   snakemake --profile slurm --configfile config/paper.yaml   # SLURM (site profile from scripts/install.sh)
# Layout and commands: docs/workflow.md, docs/artifacts.md.
from snakemake.utils import min_version

min_version("9.0")


# A --configfile replaces the embedded default instead of being merged into it.
if not workflow.overwrite_configfiles:

    configfile: workflow.source_path("config/config.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/fetch.smk"
include: "workflow/rules/spectrum.smk"
include: "workflow/rules/training.smk"
include: "workflow/rules/evaluation.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        paths.REPORT,
        workflow_config.evaluations(config),
