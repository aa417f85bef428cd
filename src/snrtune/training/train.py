"""`snrtune train`: fine-tune a model directory with one of the methods of snrtune.method_registry.

The loop is TRL's SFTTrainer (chat-template tokenization, response-only labels, packing with per-example
position ids) or TRL's DPOTrainer (``--stage dpo``). Runs build in ``RUN_DIR.partial/`` (checkpoints inside,
for ``--resume``) and are renamed to RUN_DIR when finished. The same command under torchrun / accelerate launch trains
with DDP, or with DeepSpeed / FSDP when the config names one.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import transformers

from snrtune import arguments, method_registry
from snrtune.training import methods
from snrtune.artifact_names import (ATTEMPTS_FILE, CHECKPOINTS_DIR, DELTA_FILE, METRICS_FILE,
                                    PARTIAL_SUFFIX, ROWS_DIR, RUN_FILE, SELECTION_COPY, TRAINER_PICKLE)
from snrtune.artifacts import atomic_dir, json_safe, read_json, read_yaml, write_json
from snrtune.errors import SnrtuneError
from snrtune.model_dir import check_model_dir, load_source_info, read_run_record, weights_fingerprint
from snrtune import naming
from snrtune.record import Stopwatch, run_record
from snrtune.spectrum.selection_file import check_selection_model, load_selection
from snrtune.training.settings import (TrainingSettings, check_bitsandbytes_kernels, check_packages, config_paths,
                                       examples_per_step, load_settings, parse_assignments, require_deepspeed)

STAGES = ("sft", "dpo")
DIVERGED_EXIT = 3  # `snrtune train` of a run whose loss became non-finite (docs/checks.md); 2 is a user mistake


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_dir", help="model directory (from `snrtune fetch`, or a merged SFT run for --stage dpo)")
    parser.add_argument("--method", required=True, choices=method_registry.names())
    parser.add_argument("--data", required=True, help="hub dataset id or local .json/.jsonl/.parquet file")
    parser.add_argument("--out", required=True, help="run directory to create")
    parser.add_argument("--selection", help="sel.yaml from `snrtune select` (spectrum, laser-qlora)")
    parser.add_argument("--config", action="append",
                        help="training YAML overriding src/snrtune/data/train_defaults.yaml; repeat it to merge "
                             "several in order (an overlay states only what differs)")
    parser.add_argument("--seed", type=int, help="random seed (overrides the config's)")
    parser.add_argument("--stage", choices=STAGES, default="sft", help="sft, or dpo on prompt/chosen/rejected data")
    parser.add_argument("--match-params-of", choices=method_registry.rank_references(),
                        help="laser-qlora: pick the LoRA rank that trains as many parameters as this method")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest complete checkpoint in OUT.partial/ if the run is unchanged "
                             "(settings, data, selection, model); else start afresh and say what changed")
    parser.add_argument("--max-steps", type=int, help="stop after N optimizer steps (overrides the config)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", dest="assignments",
                        help="override one training setting on top of --config (repeatable), e.g. a method's own "
                             "learning rate: --set learning_rate=3.0e-3")
    parser.add_argument("--deepspeed", help="DeepSpeed ZeRO JSON (overrides the config's deepspeed key), "
                        "e.g. config/zero3.json under torchrun")
    parser.add_argument("--allow-diverged", action="store_true",
                        help=f"a run whose loss became non-finite is a result: exit 0 instead of {DIVERGED_EXIT} "
                             "(it is written with status diverged either way; the workflow passes this)")
    arguments.output(parser, "dir", inputs=("model_dir", "--data", "--selection", "--config", "--deepspeed"))


def run(args: argparse.Namespace) -> int:
    metrics, _ = train(args.model_dir, args.method, args.data, args.out, selection=args.selection,
                       config=args.config, seed=args.seed, stage=args.stage, match_params_of=args.match_params_of,
                       resume=args.resume, max_steps=args.max_steps,
                       overrides=parse_assignments(args.assignments), deepspeed=args.deepspeed)
    if metrics is not None and metrics["status"] == "diverged":
        where = metrics["diverged"]
        print(f"snrtune train: {'warning' if args.allow_diverged else 'error'}: the run diverged: {where['key']} "
              f"became {where['value']} at step {where['step']}; training stopped and {args.out} holds it with "
              f"status diverged (exit {0 if args.allow_diverged else DIVERGED_EXIT}; try a lower learning_rate)",
              file=sys.stderr)
        return 0 if args.allow_diverged else DIVERGED_EXIT
    if metrics is not None:
        print(f"trained {metrics['run']['id']}: {metrics['trainable_params']:,} of {metrics['total_params']:,} "
              f"parameters, final loss {metrics['train_loss'][-1][1]:.4f} → {args.out}")
    return 0


# ---------------------------------------------------------------- config, selection, identity

def load_config(path: str | list[str] | None, seed: int | None = None, max_steps: int | None = None,
                method: str | None = None, overrides: dict | None = None, world_size: int = 1) -> TrainingSettings:
    """train_defaults.yaml < the method's overrides < the YAML file(s) at ``path`` < ``--set`` < the command
    line, checked; the batch of one optimizer step split over ``world_size`` processes (settings.per_process)."""
    defaults = method_registry.get(method).train_overrides if method else None
    return load_settings(path, defaults, method, overrides, world_size=world_size, seed=seed, max_steps=max_steps)


def process_count() -> int:
    """Processes of this job (torchrun's WORLD_SIZE; 1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def budget_steps(cfg: TrainingSettings, train_examples: int, world_size: int) -> int:
    """Optimizer steps of the run: max_steps, else ceil(num_epochs × training examples / examples per step), so
    that a job's step count, warm-up and schedule do not depend on how many processes it has."""
    if cfg.max_steps:
        return cfg.max_steps
    return max(1, math.ceil(cfg.num_epochs * train_examples / examples_per_step(cfg, world_size)))


def selection_total_params(model_dir, entries: dict) -> int:
    """The model's parameter count as `snrtune scan` states it in snr.json (and select in sel.yaml): over the
    runtime parameter table (snrtune.fetch.params), or the checkpoint's tensors where there is none."""
    import math

    from snrtune.fetch.params import parameter_table

    table = parameter_table(model_dir, list(entries))
    shapes = table["parameters"].values() if table else [entry.shape for entry in entries.values()]
    return sum(math.prod(shape) for shape in shapes)


def model_name(model_dir) -> str:
    return load_source_info(model_dir)["name"]


def run_identity(model_dir, method: str, selection: dict | None, seed: int, stage: str) -> dict[str, Any]:
    """snrtune_run.json, its id in the run-id grammar of snrtune.naming: ``{model}/{method}[-t{T}|-b{B}]-s{seed}[-dpo]``."""
    name = model_name(model_dir)
    with_selection = selection is not None and method_registry.get(method).needs_selection
    top = selection.get("top_percent") if with_selection else None
    budget = selection.get("budget_params") if with_selection and top is None else None
    run_id = f"{name}/" + naming.format_run(method, seed, t=top, budget=budget, stage=stage)  # as the workflow names runs
    identity = {"id": run_id, "model": name, "method": method, "top_percent": top, "seed": seed, "stage": stage}
    parent = Path(model_dir) / RUN_FILE  # a DPO stage usually starts from a merged SFT run
    if stage == "dpo" and parent.is_file():
        identity["from_run"] = read_run_record(parent)["id"]
    return identity


# ---------------------------------------------------------------- data and trainer

def load_tokenizer(model_dir, cfg: TrainingSettings):
    from snrtune.training import sft_data as data

    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    data.ensure_chat_template(tokenizer, cfg.chat_template)
    return tokenizer


def load_rows(stage: str, spec: str, cfg, summary) -> tuple[list, list, str, str]:
    """(train rows, validation rows, content sha256 of the data, its format), before any tokenizer or model
    loads. Local files were checked by ``data_check.check_training_data`` (``summary``); a hub dataset's rows
    are checked here, once loaded."""
    from snrtune.training import data_check
    from snrtune.training import sft_data as data

    records = data.load_records(spec, cfg.dataset_split)
    fmt = summary.format
    if summary.kind == "hub":
        fmt = data_check.check_records(records, cfg.dataset_format, stage, str(spec))
    sha256 = summary.sha256 or data_check.content_sha256(records)
    train_rows, val_rows = data.split_validation(records, cfg.val_fraction, cfg.seed)
    return train_rows, val_rows, sha256, fmt


def sft_layout(tokenizer, cfg) -> dict[str, Any]:
    """How SFT rows are laid out and which TRL loss mask applies (docs/training.md, "Data").

    ``loss_on: all``: whole conversations, every token trained. ``loss_on: responses``: whole conversations
    with TRL's ``assistant_only_loss`` when the chat template has (or TRL can add) ``{% generation %}``
    markers, so every assistant turn is trained; otherwise prompt-completion rows with
    ``completion_only_loss``, which train the last assistant turn (any template that renders the prompt as
    a prefix of the conversation works).
    """
    from snrtune.training import sft_data as data

    if cfg.loss_on == "all":
        return {"rows_as": "messages", "assistant_only_loss": False, "completion_only_loss": False}
    if data.trains_assistant_turns(tokenizer):
        return {"rows_as": "messages", "assistant_only_loss": True, "completion_only_loss": False}
    return {"rows_as": "prompt-completion", "assistant_only_loss": False, "completion_only_loss": True}


def datasets_for(stage: str, train_rows: list, val_rows: list, cfg, layout: dict | None = None,
                 store: Path | None = None) -> tuple[Any, Any]:
    """(train, validation or None) as datasets.Dataset rows for TRL (tokenized by the trainer).

    With ``store``, the main process saves the rows there and every process reads them back memory-mapped:
    the trainer's tokenization is then cached beside them, so under torchrun rank 0 tokenizes (call this
    inside ``main_process_first``) and the other ranks read its cache instead of tokenizing again.
    """
    import datasets

    from snrtune.training import sft_data as data

    if store is not None and int(os.environ.get("RANK", "0")) != 0:
        return read_stored_rows(store)
    if stage == "dpo":
        make = data.preference_rows
    else:
        def make(rows):
            return data.sft_rows(rows, cfg.dataset_format, layout["rows_as"])
    train_list = make(train_rows)
    if stage == "sft" and layout["rows_as"] == "prompt-completion":
        earlier = sum(any(m["role"] == "assistant" for m in row["prompt"]) for row in train_list)
        if earlier:
            print(f"note: {earlier} of {len(train_list)} conversations have earlier assistant turns, which are "
                  "context only: the chat template has no {% generation %} markers (docs/training.md, Data)")
    train_ds = datasets.Dataset.from_list(train_list)
    val_ds = datasets.Dataset.from_list(make(val_rows)) if val_rows else None
    if store is None:
        return train_ds, val_ds
    shutil.rmtree(store, ignore_errors=True)
    train_ds.save_to_disk(str(store / "train"))
    if val_ds is not None:
        val_ds.save_to_disk(str(store / "validation"))
    return read_stored_rows(store)


def read_stored_rows(store: Path) -> tuple[Any, Any]:
    import datasets

    val = store / "validation"
    return datasets.load_from_disk(str(store / "train")), datasets.load_from_disk(str(val)) if val.is_dir() else None


def data_counts(stage: str, train_rows: list, val_rows: list, trainer, cfg) -> dict[str, Any]:
    """Rows and examples for metrics.json and the log. Without packing, TRL truncates every example to
    max_seq_length and drops those left with no trained token: ``truncated`` counts the training examples
    that fill max_seq_length (cut, or exactly that long), ``dropped`` those removed. Packing cuts and
    concatenates sequences and DPO truncates its own way: both counts are None there."""
    counts = {"rows": len(train_rows) + len(val_rows), "train_rows": len(train_rows), "val_rows": len(val_rows),
              "train_examples": len(trainer.train_dataset),
              "val_examples": len(trainer.eval_dataset) if trainer.eval_dataset is not None else 0,
              "truncated": None, "dropped": None}
    if stage == "sft" and not cfg.packing:
        counts["truncated"] = sum(len(ids) >= cfg.max_seq_length for ids in trainer.train_dataset["input_ids"])
        counts["dropped"] = len(train_rows) - len(trainer.train_dataset)
    return counts


def data_line(counts: dict, max_seq_length: int) -> str:
    """The log line about the data: rows, examples, and how many were truncated or dropped."""
    line = (f"data: {counts['rows']} rows -> {counts['train_examples']} training and {counts['val_examples']} "
            f"validation examples")
    if counts["truncated"] is not None:
        line += (f"; {counts['truncated']} reach max_seq_length={max_seq_length} (cut or exactly that long), "
                 f"{counts['dropped']} dropped (no response token left)")
    return line


def interactive() -> bool:
    """A terminal on both streams: only then does a tqdm bar (carriage-return frames) make sense."""
    return sys.stdout.isatty() and sys.stderr.isatty()


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
        return read_yaml(value)
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


class Throughput(transformers.TrainerCallback):
    """Tokens and seconds of this session's training (a resumed run counts only its own part), and the
    accelerator time of every attempt: ``ledger`` (RUN.partial/attempts.json) keeps each attempt's training
    seconds and world size, flushed at every checkpoint, every ``flush_s`` seconds and at the end, so a
    resumed run adds its time to that of the attempts before it (preempted ones included)."""

    def __init__(self, ledger: Path | None = None, is_main: bool = True, flush_s: float = 30.0):
        self.ledger, self.is_main, self.flush_s = ledger, is_main, flush_s
        self.steady = None  # after on_train_end: {steps, seconds, tokens} after the first optimizer step
        self.previous = read_json(ledger)["attempts"] if ledger is not None and ledger.is_file() else []

    def on_train_begin(self, args, state, control, **kwargs):
        self.start_step, self.start_tokens = state.global_step, state.num_input_tokens_seen
        self.start = self.flushed = time.perf_counter()
        self.world_size, self.device = args.world_size, "cuda" if args.device.type == "cuda" else "cpu"
        self.seconds = 0.0
        self.warm = None  # (time, tokens) at the end of this session's first optimizer step
        self.step_ends: list[float] = []  # perf_counter at the end of each optimizer step of this session

    def attempts(self) -> list[dict]:
        now = {"seconds": round(time.perf_counter() - self.start, 3), "world_size": self.world_size,
               "device": self.device, "start_step": self.start_step}
        return [*self.previous, now]

    def flush(self) -> None:
        self.flushed = time.perf_counter()
        if self.ledger is not None and self.is_main:
            self.ledger.parent.mkdir(parents=True, exist_ok=True)
            write_json(self.ledger, {"attempts": self.attempts()})

    def on_step_end(self, args, state, control, **kwargs):
        self.step_ends.append(time.perf_counter())
        if self.warm is None:
            self.warm = (time.perf_counter(), state.num_input_tokens_seen)
        if time.perf_counter() - self.flushed >= self.flush_s:
            self.flush()

    def on_save(self, args, state, control, **kwargs):
        self.flush()

    def on_train_end(self, args, state, control, **kwargs):
        end = time.perf_counter()
        self.seconds = end - self.start
        self.tokens = int(state.num_input_tokens_seen - self.start_tokens)
        steady_steps = state.global_step - self.start_step - 1
        self.steady = None if self.warm is None or steady_steps < 1 else {
            "steps": steady_steps, "seconds": round(end - self.warm[0], 3),
            "tokens": int(state.num_input_tokens_seen - self.warm[1])}
        self.flush()

    def step_seconds(self) -> list[float]:
        """Seconds of each optimizer step of this session (the first from the start of training)."""
        starts = [self.start, *self.step_ends[:-1]]
        return [round(end - start, 4) for start, end in zip(starts, self.step_ends)]

    def cost(self) -> dict[str, Any]:
        """gpu_seconds = Σ world size × training seconds over attempts on GPUs (cpu_seconds on CPUs:
        processes × seconds), and this process's peak allocated / reserved accelerator memory."""
        attempts = self.attempts()
        cuda = self.device == "cuda"
        if cuda:
            import torch

            allocated, reserved = int(torch.cuda.max_memory_allocated()), int(torch.cuda.max_memory_reserved())
        else:
            allocated = reserved = None
        return {
            "gpu_seconds": round(sum(a["world_size"] * a["seconds"] for a in attempts if a["device"] == "cuda"), 3),
            "cpu_seconds": round(sum(a["world_size"] * a["seconds"] for a in attempts if a["device"] != "cuda"), 3),
            "train_seconds_total": round(sum(a["seconds"] for a in attempts), 3),
            "attempts": len(attempts),
            "peak_allocated_bytes": allocated, "peak_reserved_bytes": reserved,
        }


class DivergenceStop(transformers.TrainerCallback):
    """Stops training at the first logged non-finite training or validation loss (the Trainer logs every
    ``logging_steps`` steps; its NaN filter is off, see trainer_kwargs); ``where`` then says the step, the
    loss key and its value, and the run is written as finished with status "diverged"."""

    def __init__(self):
        self.where: dict[str, Any] | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in ("loss", "eval_loss"):
            value = (logs or {}).get(key)
            if isinstance(value, (int, float)) and not math.isfinite(value):
                if self.where is None:
                    self.where = {"step": state.global_step, "key": key, "value": str(float(value))}
                control.should_training_stop = True


class QuietProgress(transformers.trainer_callback.ProgressCallback):
    """The Trainer's tqdm bar (on a terminal only) without a printed dict per logging step."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        pass


def progress_line(step: int, max_steps: int, logs: dict, tokens_per_s: float | None, eta_s: float | None) -> str:
    """``step 3/6 | loss 2.0391 | lr 1.00e-02 | 812 tokens/s | ETA 0:00:04`` (eval: ``eval_loss``)."""
    import datetime

    parts = [f"step {step}/{max_steps}"]
    for key in ("loss", "eval_loss"):
        if key in logs:
            parts.append(f"{key} {logs[key]:.4f}")
    if "learning_rate" in logs:
        parts.append(f"lr {logs['learning_rate']:.2e}")
    if tokens_per_s is not None:
        parts.append(f"{tokens_per_s:.0f} tokens/s")
    if eta_s is not None:
        parts.append(f"ETA {datetime.timedelta(seconds=round(eta_s))}")
    return " | ".join(parts)


class ProgressLines(transformers.TrainerCallback):
    """One plain, flushed line per logging step on the main process: what a SLURM log shows while training."""

    def on_train_begin(self, args, state, control, **kwargs):
        self.start, self.start_step = time.perf_counter(), state.global_step
        self.last_time, self.last_tokens = self.start, state.num_input_tokens_seen

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or not ({"loss", "eval_loss"} & set(logs)):
            return
        now = time.perf_counter()
        tokens = state.num_input_tokens_seen - self.last_tokens
        rate = tokens / (now - self.last_time) if tokens and now > self.last_time else None
        done = state.global_step - self.start_step
        eta = (now - self.start) / done * (state.max_steps - state.global_step) if done else None
        if "loss" in logs:
            self.last_time, self.last_tokens = now, state.num_input_tokens_seen
        line = progress_line(state.global_step, state.max_steps, logs, rate if "loss" in logs else None, eta)
        if interactive():
            from tqdm.auto import tqdm

            tqdm.write(line)
        else:
            print(line, flush=True)


# ---------------------------------------------------------------- outputs

def spectrum_delta(trainer) -> dict[str, Any]:
    """The trained tensors by their named_parameters() names (gathered when the model is sharded)."""
    model = trainer.model
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    if trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled:
        state = trainer.accelerator.get_state_dict(trainer.model_wrapped) or {}  # ZeRO-3 gathers on rank 0 only
        return {n: t.detach().cpu().contiguous() for n, t in state.items() if n in trained}
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if n in trained}


def save_weights(trainer, spec: method_registry.MethodSpec, out: Path, selection_path, is_main: bool) -> None:
    """As the method's merge strategy needs: "spectrum-delta": the trained tensors (+ the selection, if any);
    "adapter": the PEFT adapter; "full-copy": the whole model."""
    if spec.merge == "spectrum-delta":
        from safetensors.torch import save_file

        delta = spectrum_delta(trainer)
        if is_main:
            save_file(delta, str(out / DELTA_FILE), metadata={"format": "pt"})
            if selection_path is not None:
                shutil.copyfile(selection_path, out / SELECTION_COPY)
        return
    trainer.save_model(str(out))  # adapter_model.safetensors for PEFT models, a full model directory otherwise
    if is_main:
        (out / TRAINER_PICKLE).unlink(missing_ok=True)  # a pickle; the settings are in metrics.json


def save_tokenizer(tokenizer, out: Path) -> None:
    """The tokenizer and chat template the run trained with (chat_template.jinja), for merge and evaluate."""
    tokenizer.save_pretrained(str(out))


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


def losses(log_history: list[dict], key: str) -> list[list]:
    return [[entry["step"], entry[key]] for entry in log_history if key in entry]


def selection_summary(selection: dict | None, path) -> dict | None:
    if selection is None:
        return None
    keys = ("model", "selection", "seed", "top_percent", "budget_params", "trainable_params", "total_params",
            "unfrozen_parameters")  # selection: snr, or a control (random with its seed, lowest)
    return {"file": str(path), **{k: selection.get(k) for k in keys},
            "target_modules": selection.get("exports", {}).get("peft", {}).get("target_modules")}


# ---------------------------------------------------------------- the step

def quiet_logs() -> None:
    import warnings

    import datasets

    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    if not interactive():  # "Loading weights" / "Writing model shards" bars: carriage returns in a log file
        transformers.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


def train(model_dir, method, data, out, selection=None, config=None, seed=None, stage="sft",
          match_params_of=None, resume=False, max_steps=None, callbacks=(), overrides=None, deepspeed=None):
    """Train and write RUN_DIR; returns (metrics on the main process else None, the trained model)."""
    from snrtune.training import resume as resuming
    from snrtune.training.data_check import check_training_data

    stopwatch = Stopwatch()
    entries = check_model_dir(model_dir, tokenizer=True)  # before anything loads
    if stage not in STAGES:
        raise SnrtuneError(f"stage {stage!r}; expected one of {', '.join(STAGES)}")
    if deepspeed:  # the workflow's sharded launch (snrtune.workflow.resources) names its ZeRO config
        overrides = {**(overrides or {}), "deepspeed": deepspeed}
    world_size = process_count()
    cfg = load_config(config, seed, max_steps, method, overrides, world_size)  # a bad split stops here
    where = f"training config {' and '.join(config_paths(config))}"
    require_deepspeed(cfg, "--deepspeed" if deepspeed else "--set" if "deepspeed" in (overrides or {}) else where)
    check_packages(cfg, where, method)  # flash-attention, a 4-bit method's bitsandbytes
    sel = load_selection(selection, method)
    spec = methods.check_request(method, sel, match_params_of)
    if sel is not None and spec.needs_selection:
        check_selection_model(sel, selection, model_name(model_dir), selection_total_params(model_dir, entries))
    if spec.four_bit:
        check_bitsandbytes_kernels(method)
    quiet_logs()
    data_summary = check_training_data(data, cfg.dataset_format, stage)  # before anything heavy loads
    identity = run_identity(model_dir, method, sel, cfg.seed, stage)
    identity["base_fingerprint"] = weights_fingerprint(model_dir)  # merge refuses another base (docs/artifacts.md)
    train_rows, val_rows, data_sha256, data_format = load_rows(stage, data, cfg, data_summary)
    fingerprint = resuming.run_fingerprint(cfg, method, stage, match_params_of, data_sha256, selection, model_dir)
    is_main = int(os.environ.get("RANK", "0")) == 0
    out = Path(out)
    partial = out.with_name(out.name + PARTIAL_SUFFIX)
    checkpoints = partial / CHECKPOINTS_DIR
    last, resume_notes = resuming.resume_point(partial, fingerprint, resume, is_main)
    if is_main:
        for note in resume_notes:
            print(note)

    transformers.set_seed(cfg.seed)
    tokenizer = load_tokenizer(model_dir, cfg)
    layout = sft_layout(tokenizer, cfg) if stage == "sft" else None
    args = training_args(stage, cfg, checkpoints, bool(val_rows), layout)  # before the model: ZeRO-3 loading
    with args.main_process_first(local=False, desc="training rows"):
        train_ds, val_ds = datasets_for(stage, train_rows, val_rows, cfg, layout, store=partial / ROWS_DIR)
    model, facts = methods.prepare(method, model_dir, cfg, sel, match_params_of)
    trainable, total = methods.count_params(model)
    throughput = Throughput(partial / ATTEMPTS_FILE, is_main)
    divergence = DivergenceStop()
    trainer = build_trainer(stage, model, tokenizer, args, train_ds, val_ds, [throughput, divergence, *callbacks])
    counts = data_counts(stage, train_rows, val_rows, trainer, cfg)
    if trainer.args.world_size != world_size:
        raise SnrtuneError(f"the trainer runs {trainer.args.world_size} processes but WORLD_SIZE is {world_size}; "
                           "expected equal (the batch was split for WORLD_SIZE)")
    trainer.args.max_steps = budget_steps(cfg, counts["train_examples"], world_size)  # equal at every world size
    if is_main:
        print(data_line(counts, cfg.max_seq_length))
        resuming.write_fingerprint(partial, fingerprint)
    trainer.train(resume_from_checkpoint=str(last) if last else None)
    used = optimizer_elements(trainer)
    if used is not None and used != trainable:
        raise SnrtuneError(f"the optimizer holds {used} parameters but {trainable} are trainable; expected equal")
    if val_ds is not None and not cfg.eval_steps and divergence.where is None:
        trainer.evaluate()
    save_weights(trainer, spec, partial, selection, is_main)
    if is_main:
        save_tokenizer(tokenizer, partial)
    if not is_main:
        return None, trainer.model

    metrics = run_record(
        stopwatch, run=identity, status="finished" if divergence.where is None else "diverged",
        diverged=divergence.where, trainable_params=trainable, total_params=total,
        train_loss=losses(trainer.state.log_history, "loss"),
        eval_loss=losses(trainer.state.log_history, "eval_loss"),
        tokens_per_s=round(throughput.tokens / throughput.seconds, 3) if throughput.tokens else None,
        **throughput.cost(),
        train_tokens=int(trainer.state.num_input_tokens_seen) or None,
        config=cfg.as_dict(),
        budget={"examples_per_step": examples_per_step(cfg, world_size), "world_size": world_size,
                "per_device_train_batch_size": cfg.per_device_train_batch_size,
                "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
                "max_steps": trainer.state.max_steps},
        setup={"method": method, "stage": stage, "data": str(data), "model_dir": str(model_dir),
               "world_size": trainer.args.world_size, "match_params_of": match_params_of,
               **{key: facts.get(key) for key in ("lora_r", "lora_alpha", "lora_scale", "use_rslora")}},
        selection=selection_summary(sel, selection),
        data={"source": str(data), "kind": data_summary.kind, "format": data_format, "sha256": data_sha256,
              **counts},
        details={"fingerprint": fingerprint["sha256"], "optimizer_params": used, "global_step": trainer.state.global_step,
                 "distributed_type": str(trainer.accelerator.distributed_type.value),
                 "resumed_from_step": throughput.start_step, "train_seconds": round(throughput.seconds, 3),
                 "after_first_step": throughput.steady, "step_seconds": throughput.step_seconds(),
                 "lora_target_modules": facts.get("target_modules"),
                 "unfrozen_names": facts.get("unfrozen_names")},
    )
    with atomic_dir(out, keep_partial=True) as tmp:
        shutil.rmtree(tmp / CHECKPOINTS_DIR, ignore_errors=True)
        (tmp / resuming.FINGERPRINT).unlink(missing_ok=True)
        (tmp / ATTEMPTS_FILE).unlink(missing_ok=True)  # its totals are in metrics.json
        shutil.rmtree(tmp / ROWS_DIR, ignore_errors=True)  # the data rows and their tokenization cache
        write_json(tmp / RUN_FILE, identity)
        write_json(tmp / METRICS_FILE, json_safe(metrics))  # a diverged run's non-finite losses as null
    return metrics, trainer.model
