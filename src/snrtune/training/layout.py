"""The data layout of `snrtune train`: the tokenizer, the checked rows, how SFT rows are laid out for TRL's loss
masks (docs/training.md, "Data"), the rows as datasets for the trainer, and the counts metrics.json states."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import transformers

from snrtune.training.settings import TrainingSettings


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
