"""The packages training settings need besides torch and transformers, checked before anything loads (with
flash-attention, bitsandbytes and DeepSpeed in snrtune.training.settings.check_packages, which calls
``check_setting_packages``): an ``optim`` from an optional optimizer library, a ``report_to`` integration, a
``ddp_backend`` of another accelerator's torch extension. Found, not imported (no torch here), except the
``report_to`` integrations, which transformers itself tells (it imports torch).
"""

from __future__ import annotations

from snrtune.errors import SnrtuneError

# optim name prefix -> (the module it imports, what installs it); transformers' OptimizerNames
OPTIMIZER_PACKAGES = (
    (("adamw_bnb_8bit", "adamw_8bit", "ademamix", "lion_", "paged_", "rmsprop_bnb"),
     "bitsandbytes", "pip install bitsandbytes"),
    (("galore_",), "galore_torch", "pip install galore-torch"),
    (("lomo", "adalomo"), "lomo_optim", "pip install lomo-optim"),
    (("grokadamw",), "grokadamw", "pip install grokadamw"),
    (("schedule_free_",), "schedulefree", "pip install schedulefree"),
    (("apollo_",), "apollo_torch", "pip install apollo-torch"),
    (("stable_adamw",), "optimi", "pip install torch-optimi"),
    (("adamw_torch_4bit", "adamw_torch_8bit"), "torchao", "pip install torchao"),
    (("adamw_anyprecision",), "torchdistx", "pip install torchdistx"),
    (("adamw_apex_fused",), "apex", "build NVIDIA apex (github.com/NVIDIA/apex)"),
    (("adamw_torch_xla",), "torch_xla", "pip install torch_xla"),
    (("adamw_torch_npu_fused",), "torch_npu", "pip install torch-npu"),
)
# ddp_backend -> (the torch extension it needs, what installs it); nccl, gloo, mpi and xccl come with torch
DDP_BACKEND_PACKAGES = {
    "hccl": ("torch_npu", "pip install torch-npu"),
    "cncl": ("torch_mlu", "Cambricon's torch_mlu"),
    "mccl": ("torch_musa", "Moore Threads' torch_musa"),
}
# report_to name -> the pip package, where it is not the name itself
REPORT_TO_INSTALL = {"azure_ml": "azureml-core", "comet_ml": "comet-ml", "flyte": "flytekit",
                     "kubeflow": "kfp", "tensorboard": "tensorboard"}


def optimizer_package(optim: str) -> tuple[str, str] | None:
    """(module, install) an ``optim`` needs, None for torch's own optimizers and adafactor."""
    for prefixes, module, install in OPTIMIZER_PACKAGES:
        if optim.startswith(prefixes):
            return module, install
    return None


def _report_to_names(value) -> list[str]:
    names = value if isinstance(value, list) else [value]
    return [name for name in names if name not in ("none", "all")]


def check_setting_packages(settings, where: str, installed) -> None:
    """One line naming the key and the package, for an ``optim``, ``report_to`` or ``ddp_backend`` whose package
    is not installed (``where``: the training config the settings came from; ``installed(module)``: whether a
    module can be imported, snrtune.training.settings.installed)."""
    needed = optimizer_package(settings.optim)
    if needed and not installed(needed[0]):
        raise SnrtuneError(f"{where}: key 'optim': {settings.optim!r} needs the {needed[0]} package, which is not "
                           f"installed: {needed[1]}")
    if settings.ddp_backend in DDP_BACKEND_PACKAGES:
        module, install = DDP_BACKEND_PACKAGES[settings.ddp_backend]
        if not installed(module):
            raise SnrtuneError(f"{where}: key 'ddp_backend': {settings.ddp_backend!r} needs the {module} package, "
                               f"which is not installed: {install}")
    names = _report_to_names(settings.report_to)
    if names:
        from transformers.integrations.integration_utils import get_available_reporting_integrations

        available = get_available_reporting_integrations()
        for name in names:
            if name not in available:
                raise SnrtuneError(f"{where}: key 'report_to': {name!r} needs the {name} package, which is not "
                                   f"installed: pip install {REPORT_TO_INSTALL.get(name, name)} (or report_to: none)")
