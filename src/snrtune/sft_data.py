"""Training data: load a hub dataset or a local json/jsonl/parquet file, normalise it to chat messages,
render it with the model's chat template and tokenize it with labels on the responses only.

Formats (detected from the columns, or named):
  alpaca     {instruction, input?, output, system?}
  sharegpt   {conversations: [{from: human|gpt|system, value}]}
  messages   {messages: [{role, content}]}
  preference {prompt, chosen, rejected} (DPO; strings or message lists)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from snrtune.data_check import FORMATS, SHAREGPT_ROLES, data_kind, detect_format, read_rows  # noqa: F401
from snrtune.errors import SnrtuneError

IGNORE = -100


def load_records(spec: str, split: str = "train") -> list[dict[str, Any]]:
    """Rows of a local json/jsonl/parquet file, or of split ``split`` of a hub dataset id.

    JSON and JSONL are read by snrtune.data_check (one-line errors naming the row; rows kept exactly as
    written, with no column unification across rows); parquet and hub datasets by ``datasets``.
    """
    import datasets

    spec = str(spec)
    path = Path(spec)
    if data_kind(spec) == "local":
        if path.suffix.lower() in (".json", ".jsonl"):
            return read_rows(path)
        ds = datasets.load_dataset("parquet", data_files=str(path), split="train")
    else:
        try:
            ds = datasets.load_dataset(spec, split=split)
        except Exception as exc:  # the hub raises many types; the user needs one line
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise SnrtuneError(f"cannot load hub dataset {spec!r} (split {split!r}): {first}") from exc
    if len(ds) == 0:
        raise SnrtuneError(f"data {spec!r} has no rows")
    return ds.to_list()


def to_messages(record: dict[str, Any], fmt: str) -> list[dict[str, str]]:
    """One record as a list of {role, content} messages."""
    if fmt == "alpaca":
        prompt = record["instruction"]
        if record.get("input"):
            prompt = f"{prompt}\n\n{record['input']}"
        messages = [{"role": "system", "content": record["system"]}] if record.get("system") else []
        return messages + [{"role": "user", "content": prompt}, {"role": "assistant", "content": record["output"]}]
    if fmt == "sharegpt":
        out = []
        for turn in record["conversations"]:
            speaker = turn.get("from")
            role = SHAREGPT_ROLES.get(speaker) if isinstance(speaker, str) else None
            if role is None:
                raise SnrtuneError(f"sharegpt turn has 'from': {turn.get('from')!r}; expected one of "
                                   f"{', '.join(SHAREGPT_ROLES)}")
            out.append({"role": role, "content": turn["value"]})
        return out
    if fmt == "messages":
        return [{"role": m["role"], "content": m["content"]} for m in record["messages"]]
    raise SnrtuneError(f"data format {fmt!r} is not one of {', '.join(FORMATS)}")


def ensure_chat_template(tokenizer, template: str | None) -> None:
    """Use ``template`` (a Jinja string or a file holding one) if given; else the tokenizer must have one."""
    if template:
        tokenizer.chat_template = Path(template).read_text() if Path(template).is_file() else template
    if not getattr(tokenizer, "chat_template", None):
        raise SnrtuneError("the model's tokenizer has no chat template; set `chat_template` in the training "
                           "config (a Jinja string or a file path)")


def render(tokenizer, messages: list[dict[str, str]], generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def response_spans(tokenizer, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of the assistant turns in it.

    A turn's span runs from the end of the prompt rendered with the generation prompt to the end of the
    conversation rendered up to and including that turn (so it covers the end-of-turn token).
    """
    text = render(tokenizer, messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render(tokenizer, messages[:i], generation_prompt=True)
        through = render(tokenizer, messages[: i + 1])
        if not (text.startswith(before) and text.startswith(through)):
            raise SnrtuneError("the chat template does not render conversations prefix by prefix, so response "
                               "tokens cannot be located; set `loss_on: all` in the training config")
        spans.append((len(before), len(through)))
    return text, spans


def tokenize_conversation(tokenizer, messages, max_length: int, loss_on: str = "responses") -> dict[str, list[int]]:
    """input_ids and labels (IGNORE outside the responses unless ``loss_on == 'all'``), truncated to
    ``max_length`` tokens (``truncated`` says whether it was)."""
    text, spans = response_spans(tokenizer, messages)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = enc["input_ids"][:max_length]
    labels = []
    for token, (start, end) in zip(ids, enc["offset_mapping"]):
        inside = loss_on == "all" or any(s <= start and end <= e and end > start for s, e in spans)
        labels.append(token if inside else IGNORE)
    return {"input_ids": ids, "labels": labels, "truncated": len(enc["input_ids"]) > max_length}


def pack(examples: list[dict[str, list[int]]], max_length: int) -> list[dict[str, list[int]]]:
    """Concatenate whole examples greedily into sequences of at most ``max_length`` tokens."""
    packed, current = [], {"input_ids": [], "labels": []}
    for ex in examples:
        if current["input_ids"] and len(current["input_ids"]) + len(ex["input_ids"]) > max_length:
            packed.append(current)
            current = {"input_ids": [], "labels": []}
        current["input_ids"] = current["input_ids"] + ex["input_ids"]
        current["labels"] = current["labels"] + ex["labels"]
    if current["input_ids"]:
        packed.append(current)
    return packed


def tokenized_examples(records, tokenizer, fmt: str, max_length: int, loss_on: str) -> tuple[list, dict[str, int]]:
    """(examples, counts) for SFT rows. An example longer than ``max_length`` tokens is truncated (its end is
    cut); one left with no trainable token (with ``loss_on: responses``, its whole response was cut) is
    dropped. ``counts``: {"truncated": examples kept but cut, "dropped": examples removed}."""
    fmt = detect_format(records[0]) if fmt == "auto" else fmt
    examples, truncated, dropped = [], 0, 0
    for record in records:
        example = tokenize_conversation(tokenizer, to_messages(record, fmt), max_length, loss_on)
        if not any(label != IGNORE for label in example["labels"]):
            dropped += 1
            continue
        truncated += example.pop("truncated")
        examples.append(example)
    return examples, {"truncated": truncated, "dropped": dropped}


def sft_examples(records, tokenizer, fmt: str, max_length: int, loss_on: str, packing: bool, counts=None):
    """Tokenized (and packed, if asked) SFT examples; see ``tokenized_examples``. Adds the truncated and
    dropped counts to the dict ``counts`` when one is given."""
    examples, cut = tokenized_examples(records, tokenizer, fmt, max_length, loss_on)
    if counts is not None:
        for key, value in cut.items():
            counts[key] = counts.get(key, 0) + value
    if not examples:
        raise SnrtuneError(f"no example keeps a response token within max_seq_length={max_length}")
    return pack(examples, max_length) if packing else examples


def split_validation(items: list, fraction: float, seed: int) -> tuple[list, list]:
    """(train, validation): a seeded shuffle holds out round(fraction·n) items (at least one if fraction > 0)."""
    import random

    if not 0 <= fraction < 1:
        raise SnrtuneError(f"val_fraction={fraction}; expected a number in [0, 1)")
    n_val = max(1, round(fraction * len(items))) if fraction > 0 else 0
    if n_val >= len(items):
        raise SnrtuneError(f"val_fraction={fraction} leaves no training rows out of {len(items)}")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    val = sorted(order[:n_val])
    val_set = set(val)
    return [items[i] for i in range(len(items)) if i not in val_set], [items[i] for i in val]


def preference_rows(records) -> list[dict[str, Any]]:
    """DPO rows as TRL's conversational preference format: prompt / chosen / rejected message lists."""
    missing = {"prompt", "chosen", "rejected"} - set(records[0])
    if missing:
        raise SnrtuneError(f"preference data lacks column(s) {sorted(missing)}; expected prompt, chosen, rejected")

    def as_messages(value, role):
        return [{"role": role, "content": value}] if isinstance(value, str) else value

    return [{"prompt": as_messages(r["prompt"], "user"), "chosen": as_messages(r["chosen"], "assistant"),
             "rejected": as_messages(r["rejected"], "assistant")} for r in records]
