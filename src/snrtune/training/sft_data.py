"""Training data: load a hub dataset or a local json/jsonl/parquet file and normalise it to chat messages,
as rows TRL's SFTTrainer tokenizes (with the chat template, labels on the responses only, packing).

Formats (detected from the columns, or named):
  alpaca     {instruction, input?, output, system?}
  sharegpt   {conversations: [{from: human|gpt|system, value}]}
  messages   {messages: [{role, content}]}
  preference {prompt, chosen, rejected} (DPO; strings or message lists)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from snrtune.hub import data_kind
from snrtune.training.data_check import FORMATS, SHAREGPT_ROLES, detect_format, read_rows  # noqa: F401
from snrtune.errors import SnrtuneError



def load_records(source: str, split: str = "train") -> list[dict[str, Any]]:
    """Rows of a local json/jsonl/parquet file, or of split ``split`` of a hub dataset id.

    JSON and JSONL are read by snrtune.training.data_check (one-line errors naming the row; rows kept exactly as
    written, with no column unification across rows); parquet and hub datasets by ``datasets``.
    """
    import datasets

    source = str(source)
    path = Path(source)
    if data_kind(source) == "local":
        if path.suffix.lower() in (".json", ".jsonl"):
            return read_rows(path)
        ds = datasets.load_dataset("parquet", data_files=str(path), split="train")
    else:
        try:
            ds = datasets.load_dataset(source, split=split)
        except Exception as exc:  # the hub raises many types; the user needs one line
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise SnrtuneError(f"cannot load hub dataset {source!r} (split {split!r}): {first}") from exc
    if len(ds) == 0:
        raise SnrtuneError(f"data {source!r} has no rows")
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


def is_template_file(template: str) -> bool:
    """A path to a template file, not a Jinja string (which may be longer than a file name may be)."""
    if "{%" in template or "{{" in template:
        return False
    try:
        return Path(template).is_file()
    except OSError:
        return False


def ensure_chat_template(tokenizer, template: str | None) -> None:
    """Use ``template`` (a Jinja string or a file holding one) if given; else the tokenizer must have one."""
    if template:
        tokenizer.chat_template = Path(template).read_text() if is_template_file(template) else template
    if not getattr(tokenizer, "chat_template", None):
        raise SnrtuneError("the model's tokenizer has no chat template; set `chat_template` in the training "
                           "config (a Jinja string or a file path)")


def render(tokenizer, messages: list[dict[str, str]], generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def trains_assistant_turns(tokenizer) -> bool:
    """Whether TRL can mask every assistant turn (``assistant_only_loss``) with this tokenizer's template.

    That needs ``{% generation %}`` markers: in the template itself, or in the training version TRL ships
    for the templates it knows (Llama 3, Qwen, Gemma, Phi-3, …). ChatML-style templates without markers,
    SmolLM2's included, have neither.
    """
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    if has_generation_markers(tokenizer.chat_template):
        return True
    try:
        return get_training_chat_template(tokenizer) is not None
    except ValueError:  # "patching is not supported for this template"
        return False


def prompt_completion(messages: list[dict[str, str]], row: int) -> dict[str, list]:
    """TRL's conversational prompt-completion row: everything before the last assistant turn, and that turn."""
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None or last == 0:
        raise SnrtuneError(f"training row {row} has no assistant turn after a prompt; expected a conversation "
                           "ending in an assistant response")
    return {"prompt": messages[:last], "completion": [messages[last]]}


def sft_rows(records, fmt: str, rows_as: str) -> list[dict[str, list]]:
    """Records as rows for TRL's SFTTrainer, which tokenizes them with the chat template.

    ``rows_as``: ``messages`` (a conversation per row: trained on every token, or on every assistant turn
    with ``assistant_only_loss``) or ``prompt-completion`` (trained on the last assistant turn only, through
    ``completion_only_loss``; earlier turns are context).
    """
    fmt = detect_format(records[0]) if fmt == "auto" else fmt
    conversations = [to_messages(r, fmt) for r in records]
    if rows_as == "messages":
        return [{"messages": m} for m in conversations]
    return [prompt_completion(m, i) for i, m in enumerate(conversations)]


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
