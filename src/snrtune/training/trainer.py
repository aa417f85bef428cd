"""The trainer of `snrtune train`: its step budget, TrainingArguments (SFTConfig / DPOConfig), the row-packed
collator, the SFTTrainer subclass, and the checks on what the built trainer does (sharding, adapter dtype,
the parameters its optimizer holds)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import transformers

from snrtune.fileio import read_yaml
from snrtune.errors import SnrtuneError
from snrtune.training import methods
from snrtune.training.callbacks import ProgressLines, QuietProgress, interactive
from snrtune.training.settings import TrainingSettings, examples_per_step


def process_count() -> int:
    """Processes of this job (torchrun's WORLD_SIZE; 1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def budget_steps(cfg: TrainingSettings, train_examples: int, world_size: int) -> int:
    """Optimizer steps of the run: max_steps, else ceil(num_epochs × training examples / examples per step), so
    that a job's step count, warm-up and schedule do not depend on how many processes it has."""
    if cfg.max_steps:
        return cfg.max_steps
    return max(1, math.ceil(cfg.num_epochs * train_examples / examples_per_step(cfg, world_size)))


def trainer_kwargs(cfg: TrainingSettings, output_dir: Path, has_eval: bool) -> dict[str, Any]:
    """TrainingArguments (SFTConfig / DPOConfig) keywords for ``cfg``: bf16 or fp16 on GPU, fp32 on the CPU."""
    import torch

    dtype = methods.compute_dtype()
    every = cfg.eval_steps
    return dict(
        output_dir=str(output_dir), seed=cfg.seed, data_seed=cfg.seed,
        learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_steps, optim=cfg.optim, adam_beta1=cfg.adam_beta1,
        adam_beta2=cfg.adam_beta2, adam_epsilon=cfg.adam_epsilon, weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm, per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, num_train_epochs=cfg.num_epochs,
        max_steps=cfg.max_steps if cfg.max_steps else -1,
        bf16=dtype == torch.bfloat16, fp16=dtype == torch.float16, use_cpu=not torch.cuda.is_available(),
        gradient_checkpointing=cfg.gradient_checkpointing, gradient_checkpointing_kwargs={"use_reentrant": False},
        logging_steps=cfg.logging_steps, logging_nan_inf_filter=False,  # a NaN loss is logged (DivergenceStop)
        save_strategy="steps", save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        eval_strategy="steps" if (every and has_eval) else "no", eval_steps=every,
        report_to=cfg.report_to, log_level="error", disable_tqdm=not interactive(),
        # flattened packed batches (flash attention) have no padding and no attention mask: "non_padding" would
        # compare with pad_token_id, often the end-of-turn token, and miss those. Row-packed and unpacked batches
        # carry an attention mask, which "non_padding" sums.
        include_num_input_tokens_seen="all" if cfg.packing and not packs_rows(cfg.attn_implementation)
        else "non_padding",
        remove_unused_columns=False, ddp_find_unused_parameters=False, dataloader_num_workers=0,
        ddp_backend=cfg.ddp_backend, deepspeed=cfg.deepspeed, fsdp=cfg.fsdp or None,
        fsdp_config=fsdp_settings(cfg.fsdp_config),
    )


def fsdp_settings(value):
    """``fsdp_config`` as TrainingArguments takes it: a dict, a JSON path, or (read here) a YAML path."""
    if isinstance(value, str) and value.endswith((".yaml", ".yml")):
        if not Path(value).is_file():
            raise SnrtuneError(f"fsdp_config file {value} does not exist; expected e.g. config/fsdp.yaml")
        return read_yaml(value, "fsdp_config file")
    return value


def training_args(stage: str, cfg: TrainingSettings, output_dir: Path, has_eval: bool, layout: dict | None = None):
    """SFTConfig or DPOConfig. Built before the model is loaded: creating them sets up the distributed
    state, and with a ZeRO-3 config, the DeepSpeed config that makes from_pretrained load each rank's
    partition only (transformers' HfDeepSpeedConfig; the returned object must stay alive meanwhile)."""
    import trl

    init_deepspeed_on_cpu(cfg)
    kwargs = trainer_kwargs(cfg, output_dir, has_eval)
    if stage == "dpo":  # DPO batches are padded, never packed
        kwargs["include_num_input_tokens_seen"] = "non_padding"
        return trl.DPOConfig(**kwargs, beta=cfg.dpo_beta, max_length=cfg.max_seq_length)
    return trl.SFTConfig(
        **kwargs, max_length=cfg.max_seq_length, packing=cfg.packing, pad_to_multiple_of=cfg.pad_to_multiple_of,
        packing_strategy="bfd",  # whole examples, each with its own position ids (no cross-example attention)
        assistant_only_loss=layout["assistant_only_loss"], completion_only_loss=layout["completion_only_loss"],
        dataset_num_proc=cfg.dataset_num_proc, shuffle_dataset=False)


def init_deepspeed_on_cpu(cfg: TrainingSettings) -> None:
    """DeepSpeed's process group for CPU processes under torchrun. accelerate starts DeepSpeed's communication
    only on accelerator devices; without it ZeRO-3's partitioned loading (zero.Init, in from_pretrained) sees
    one process and its batch check fails on two. DeepSpeed's gloo backend is what its CPU runs use."""
    import torch

    if cfg.deepspeed and not torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        import deepspeed

        deepspeed.init_distributed(dist_backend=cfg.ddp_backend or "gloo")


VARLEN_ATTENTION = ("flash_attention_2", "flash_attention_3")

IGNORE_INDEX = -100  # the label transformers' cross-entropy skips


def packs_rows(attn_implementation: str | None) -> bool:
    """Whether packed batches keep their rows (sdpa, eager, flex; transformers' default when unset) rather than
    being flattened into one sequence (the varlen flash-attention kernels, which take the sequence starts)."""
    return attn_implementation not in VARLEN_ATTENTION


def row_packed_collator(pad_token_id: int, pad_to_multiple_of: int | None):
    """TRL's collator for best-fit-decreasing packed rows, keeping each packed row a batch row.

    TRL flattens a packed batch into one sequence of batch × max_length tokens. For flash attention that is
    free; for sdpa and eager, transformers builds one (batch·L)² block-diagonal mask, so attention costs
    batch times what the rows would (SmolLM2's shape, 8×1024 tokens, H200: 1.25× the time and 1.29× the peak
    memory of rows; benchmarks/packing.py). Here each row keeps its own position ids, restarting at every example,
    which transformers turns into the same block-diagonal mask per row; a label at an example's first token is
    ignored, as TRL's padding-free collator does, so no example is predicted from the one before it. The
    attention mask marks the padding at the end of short rows: the Trainer counts real tokens with it, and
    ``compute_loss`` removes it before the forward pass (a mask given to the model would hide the position ids).
    """
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    class RowPackedCollator(DataCollatorForLanguageModeling):
        def torch_call(self, examples):
            out = super().torch_call(examples)
            out["labels"][out["position_ids"] == 0] = IGNORE_INDEX
            return out

    return RowPackedCollator(pad_token_id=pad_token_id, padding_free=False, return_position_ids=True,
                             pad_to_multiple_of=pad_to_multiple_of)


def sft_trainer_class():
    """TRL's SFTTrainer with transformers' own loss (the model's cross-entropy on the labels TRL built), and
    packed rows kept as rows where the attention kernel needs that (``row_packed_collator``).

    TRL's compute_loss runs the output head through its fused, chunked path to also log per-token entropy and
    accuracy; on SmolLM2 (CPU) that made a step 1.3× slower than the model's own loss, for metrics snrtune
    does not record (benchmarks/train.py). The loss is the same: mean over the trained tokens, with
    ``num_items_in_batch`` across gradient accumulation and devices handled by transformers' Trainer.
    """
    import trl

    class SFTTrainer(trl.SFTTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.row_packed = self.padding_free and packs_rows(self.model.config._attn_implementation)
            if self.row_packed:
                self.data_collator = row_packed_collator(self.data_collator.pad_token_id,
                                                         self.data_collator.pad_to_multiple_of)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            # no KV cache in training: with one, transformers ignores restarting position ids (no packed mask)
            inputs = {**inputs, "use_cache": False}
            if self.row_packed:
                inputs.pop("attention_mask", None)
            return transformers.Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)

    return SFTTrainer


def build_trainer(stage, model, tokenizer, args, train_ds, val_ds, callbacks):
    import trl

    trainer_class = trl.DPOTrainer if stage == "dpo" else sft_trainer_class()
    trainer = trainer_class(model=model, args=args, train_dataset=train_ds, eval_dataset=val_ds,
                            processing_class=tokenizer, callbacks=list(callbacks))
    keep_adapter_dtype(trainer.model)
    check_sharding(trainer)
    if stage == "sft" and len(trainer.train_dataset) == 0:
        raise SnrtuneError(f"no training example keeps a response token within max_seq_length={args.max_length}")
    trainer.pop_callback(transformers.trainer_callback.PrinterCallback)  # a dict per log; ProgressLines instead
    trainer.pop_callback(transformers.trainer_callback.ProgressCallback)
    if interactive():
        trainer.add_callback(QuietProgress)
    trainer.add_callback(ProgressLines)
    return trainer


def check_sharding(trainer) -> None:
    """A config asking for FSDP or DeepSpeed that accelerate does not apply is an error, not a DDP run.

    accelerate (1.15) turns FSDP on only for GPU-type devices: on CPU processes it keeps MULTI_CPU (DDP)."""
    import accelerate

    asked = {"fsdp": bool(trainer.args.fsdp), "deepspeed": bool(trainer.args.deepspeed)}
    got = {"fsdp": trainer.is_fsdp_enabled, "deepspeed": trainer.is_deepspeed_enabled}
    for key in asked:
        if asked[key] and not got[key]:
            kind = trainer.accelerator.distributed_type.value
            raise SnrtuneError(f"training config sets {key} but accelerate {accelerate.__version__} runs this job as "
                               f"{kind}, without {key} (it shards only on GPUs); expected a GPU launch or {key}: null")


def keep_adapter_dtype(model) -> None:
    """TRL casts a 4-bit model's adapter to bf16 (the QLoRA paper's choice); where the compute dtype is not
    bf16 (CPU, fp16 GPUs, whose mixed precision needs fp32 trainable weights) they go back to fp32."""
    import torch

    if not (getattr(model, "is_loaded_in_4bit", False) and methods.compute_dtype() != torch.bfloat16):
        return
    for param in model.parameters():
        if param.requires_grad and param.dtype == torch.bfloat16:
            param.data = param.data.to(torch.float32)


def optimizer_elements(trainer) -> int | None:
    """Elements the optimizer updates (None under FSDP, which flattens them). A ZeRO optimizer's param_groups
    hold flat partitions; its 16-bit groups (``fp16_groups`` at stage 3, ``bit16_groups`` at 1/2) keep the
    model's parameters, counted with their ``ds_numel`` under ZeRO-3."""
    if trainer.is_fsdp_enabled or trainer.optimizer is None:
        return None
    if trainer.is_deepspeed_enabled:
        zero = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
        groups = getattr(zero, "fp16_groups", None) or getattr(zero, "bit16_groups", None)
        return None if groups is None else sum(methods.n_elements(p) for group in groups for p in group)
    return sum(p.numel() for group in trainer.optimizer.param_groups for p in group["params"])
