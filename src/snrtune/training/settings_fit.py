"""Where the training settings meet the data and the machine: the checks no single setting can make alone (each
setting's own type and range are its field's check in snrtune.training.settings). ``check_settings_fit`` is called
by `snrtune train` once the rows are read and before the tokenizer and the model load, and by the workflow's
pre-flight for every training job, with what it can know there (the local data file's rows, the job's planned
processes; not the machine the job will run on).
"""

from __future__ import annotations

from snrtune.errors import SnrtuneError
from snrtune.training.settings import TrainingSettings, default_values, examples_per_step

NEEDS_CUDA = ("flex_attention", "flash_attention_2", "flash_attention_3")


def check_settings_fit(cfg: TrainingSettings, where: str, *, data_local: bool | None = None,
                       train_rows: int | None = None, world_size: int = 1, cuda: bool | None = None) -> None:
    """One line naming the key(s), for settings that cannot mean what they say for this data and machine:

    - ``lr_scheduler_type: reduce_lr_on_plateau`` without a validation loss during training (``eval_steps`` and
      ``val_fraction`` > 0): it would never step;
    - ``dataset_split`` other than the default for a local file (``data_local``), which has no splits;
    - a budget of less than one full optimizer step: ``num_epochs`` × ``train_rows`` below the examples of one step,
      or with ``max_steps``, fewer training rows than one step takes;
    - ``fsdp`` in a job of one process (``world_size``);
    - with ``cuda`` False (the machine has no CUDA GPU), an attention kernel or a ``ddp_backend`` that needs one.

    Unknown facts (None) are not checked."""
    if cfg.lr_scheduler_type == "reduce_lr_on_plateau" and not (cfg.eval_steps and cfg.val_fraction > 0):
        missing = "eval_steps is null (one evaluation, at the end)" if not cfg.eval_steps else "val_fraction is 0"
        raise SnrtuneError(f"{where}: key 'lr_scheduler_type': reduce_lr_on_plateau lowers the learning rate when "
                           f"the validation loss stops falling, but {missing}; expected eval_steps: N and "
                           f"val_fraction > 0, or another scheduler")
    whole_file = default_values()["dataset_split"]  # what a local file is read as: the default split, the whole file
    if data_local and cfg.dataset_split != whole_file:
        raise SnrtuneError(f"{where}: key 'dataset_split': {cfg.dataset_split!r} names a split of a hub dataset, but "
                           f"the training data is a local file, which has none; expected dataset_split: "
                           f"{whole_file} (the whole file, the default), or a hub dataset id")
    if train_rows is not None:
        per_step = examples_per_step(cfg, world_size)
        step_words = (f"per_device_train_batch_size × gradient_accumulation_steps"
                      f"{f' × {world_size} processes' if world_size > 1 else ''} = {per_step} examples per step")
        if cfg.max_steps is None and cfg.num_epochs * train_rows < per_step:
            raise SnrtuneError(f"{where}: keys 'num_epochs' and 'gradient_accumulation_steps': {cfg.num_epochs:g} "
                               f"epoch(s) of {train_rows} training rows at {step_words} is "
                               f"{cfg.num_epochs * train_rows / per_step:.3g} optimizer steps; expected at least one "
                               f"full step (raise num_epochs, or take fewer examples per step)")
        if cfg.max_steps is not None and train_rows < per_step:
            raise SnrtuneError(f"{where}: keys 'per_device_train_batch_size' and 'gradient_accumulation_steps': "
                               f"{step_words}, but the data has {train_rows} training rows; expected at least one "
                               f"full step's examples")
    if cfg.fsdp and world_size == 1:
        raise SnrtuneError(f"{where}: key 'fsdp': FSDP shards the model over processes, but this job runs one; "
                           f"expected a launch with several (torchrun --nproc_per_node N), or fsdp: null")
    if cuda is False and cfg.attn_implementation in NEEDS_CUDA:
        raise SnrtuneError(f"{where}: key 'attn_implementation': {cfg.attn_implementation!r} needs a CUDA GPU, and "
                           f"this machine has none; expected sdpa or eager (or null) on a CPU")
    if cuda is False and cfg.ddp_backend == "nccl":
        raise SnrtuneError(f"{where}: key 'ddp_backend': 'nccl' needs CUDA GPUs, and this machine has none; expected "
                           f"gloo (or null) on a CPU")
