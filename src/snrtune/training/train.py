"""`snrtune train`: fine-tune a model directory with one of the methods of snrtune.method_registry.

The loop is TRL's SFTTrainer (chat-template tokenization, response-only labels, packing with per-example
position ids) or TRL's DPOTrainer (``--stage dpo``). Runs build in ``RUN_DIR.partial/`` (checkpoints inside,
for ``--resume``) and are renamed to RUN_DIR when finished. The same command under torchrun / accelerate launch trains
with DDP, or with DeepSpeed / FSDP when the config names one.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import transformers

from snrtune import arguments, method_registry
from snrtune.training import methods
from snrtune.artifact_names import ATTEMPTS_FILE, CHECKPOINTS_DIR, PARTIAL_SUFFIX, ROWS_DIR
from snrtune.errors import SnrtuneError
from snrtune.fetch.model_check import check_model
from snrtune.fetch.params import parameter_table
from snrtune.fileio import Owner, claim_dir, sibling_refusal
from snrtune.model_dir import weights_fingerprint
from snrtune.record import Stopwatch, run_record
from snrtune.spectrum.selection_file import (check_selection_fits, check_selection_kind, check_selection_model,
                                            load_selection)
from snrtune.training.callbacks import DivergenceStop, Throughput, interactive
from snrtune.training.identity import model_name, run_identity, selection_total_params
from snrtune.training.layout import data_counts, data_line, datasets_for, load_rows, load_tokenizer, sft_layout
from snrtune.training.outputs import losses, save_tokenizer, save_weights, selection_summary, write_run_dir
from snrtune.training.settings import (check_bitsandbytes_kernels, check_packages, config_paths, examples_per_step,
                                       load_config, parse_set_flags, require_deepspeed)
from snrtune.training.settings_fit import check_settings_fit
from snrtune.training.trainer import budget_steps, build_trainer, optimizer_elements, process_count, training_args

STAGES = ("sft", "dpo")
DIVERGED_EXIT = 3  # `snrtune train` of a run whose loss became non-finite (docs/checks.md); 2 is a user mistake
OWNER = Owner("train")


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
    parser.add_argument("--allow-every-parameter", action="store_true",
                        help="train a selection (spectrum) that makes every parameter trainable (refused otherwise: "
                             "that is a full fine-tune under another name)")
    arguments.output(parser, "dir", inputs=("model_dir", "--data", "--selection", "--config", "--deepspeed"),
                     siblings=lambda args, out: [(out.rstrip("/") + PARTIAL_SUFFIX, "dir", PARTIAL_SUFFIX)])


def run(args: argparse.Namespace) -> int:
    metrics, _ = train(args.model_dir, args.method, args.data, args.out, selection=args.selection,
                       config=args.config, seed=args.seed, stage=args.stage, match_params_of=args.match_params_of,
                       resume=args.resume, max_steps=args.max_steps,
                       overrides=parse_set_flags(args.assignments), deepspeed=args.deepspeed,
                       allow_every_parameter=args.allow_every_parameter)
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
          match_params_of=None, resume=False, max_steps=None, callbacks=(), overrides=None, deepspeed=None,
          allow_every_parameter=False):
    """Train and write RUN_DIR; returns (metrics on the main process else None, the trained model)."""
    import torch

    from snrtune.training import resume as resuming
    from snrtune.training.data_check import check_training_data

    # the request, checked before anything heavy loads: model directory, settings, selection, packages, data
    stopwatch = Stopwatch()
    # files, the weights config.json describes, a tokenizer that loads and a chat template that compiles
    entries = check_model(model_dir, tokenizer=True)
    if stage not in STAGES:
        raise SnrtuneError(f"stage {stage!r}; expected one of {', '.join(STAGES)}")
    if deepspeed:  # the workflow's sharded launch (snrtune.workflow.resources) names its ZeRO config
        overrides = {**(overrides or {}), "deepspeed": deepspeed}
    world_size = process_count()
    cfg = load_config(config, seed, max_steps, method, overrides, world_size)  # a bad split stops here
    where = f"training config {' and '.join(config_paths(config))}" if config else "training settings"
    require_deepspeed(cfg, "--deepspeed" if deepspeed else "--set" if "deepspeed" in (overrides or {}) else where)
    check_packages(cfg, where, method)  # flash-attention, a 4-bit method's bitsandbytes
    sel = load_selection(selection, method)
    spec = methods.check_request(method, sel, match_params_of)
    if sel is not None and spec.needs_selection:
        check_selection_kind(sel, selection, method)
        check_selection_model(sel, selection, model_name(model_dir), selection_total_params(model_dir, entries))
        table = parameter_table(model_dir, list(entries))
        check_selection_fits(sel, selection, method, table["parameters"], table["tied"], allow_every_parameter)
    if spec.four_bit:
        check_bitsandbytes_kernels(method)
    quiet_logs()
    data_summary = check_training_data(data, cfg.dataset_format, stage)  # before anything heavy loads
    # the run's identity, its rows and fingerprint, and where it resumes from
    identity = run_identity(model_dir, method, sel, cfg.seed, stage)
    identity["base_fingerprint"] = weights_fingerprint(model_dir)  # merge refuses another base (docs/artifacts.md)
    train_rows, val_rows, data_sha256, data_format = load_rows(stage, data, cfg, data_summary)
    check_settings_fit(cfg, where, data_local=data_summary.kind == "local", train_rows=len(train_rows),
                       world_size=world_size, cuda=torch.cuda.is_available())
    fingerprint = resuming.run_fingerprint(cfg, method, stage, match_params_of, data_sha256, selection, model_dir)
    is_main = int(os.environ.get("RANK", "0")) == 0
    out = Path(out)
    partial = out.with_name(out.name + PARTIAL_SUFFIX)
    checkpoints = partial / CHECKPOINTS_DIR
    reason = sibling_refusal(partial, "dir", OWNER.sibling(PARTIAL_SUFFIX), "--out's partial run")
    if reason:  # a user's directory, a file or a link where the partial run goes: never removed
        raise SnrtuneError(reason)
    last, resume_notes = resuming.resume_point(partial, fingerprint, resume, is_main)
    if is_main:
        for note in resume_notes:
            print(note)
        claim_dir(partial, OWNER.sibling(PARTIAL_SUFFIX), "--out's partial run")

    # tokenizer, trainer arguments, rows for TRL, the model, the trainer and its step budget
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
    # train, check the optimizer, a last validation, then the weights and tokenizer into RUN_DIR.partial
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

    # metrics.json and snrtune_run.json, then RUN_DIR
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
    write_run_dir(out, identity, metrics)  # RUN_DIR.partial renamed to RUN_DIR
    return metrics, trainer.model
