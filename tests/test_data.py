"""Training data: formats, chat-template rendering, response-only labels, packing, validation split."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from tiny import make_tokenizer

from snrtune import sft_data as data
from snrtune.errors import SnrtuneError

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And Italy?"},
    {"role": "assistant", "content": "Rome."},
]


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


def trained_text(tokenizer, example):
    """The text of the labelled tokens, runs of labels joined by '|'."""
    pieces, run = [], []
    for token, label in zip(example["input_ids"], example["labels"]):
        if label == data.IGNORE:
            if run:
                pieces.append(tokenizer.decode(run))
                run = []
        else:
            assert label == token
            run.append(token)
    if run:
        pieces.append(tokenizer.decode(run))
    return "|".join(pieces)


def test_formats_become_the_same_messages():
    alpaca = {"instruction": "Capital of France?", "input": "", "output": "Paris.", "system": "Be brief."}
    sharegpt = {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Capital of France?"},
                                  {"from": "gpt", "value": "Paris."}]}
    messages = {"messages": CONVERSATION[:3]}
    for record, fmt in ((alpaca, "alpaca"), (sharegpt, "sharegpt"), (messages, "messages")):
        assert data.detect_format(record) == fmt
        assert data.to_messages(record, fmt) == CONVERSATION[:3]
    with_input = data.to_messages({"instruction": "Translate", "input": "chat", "output": "cat"}, "alpaca")
    assert with_input[0] == {"role": "user", "content": "Translate\n\nchat"}


def test_unknown_format_and_role_are_errors():
    with pytest.raises(SnrtuneError, match="'text'"):
        data.detect_format({"text": "hello"})
    with pytest.raises(SnrtuneError, match="'robot'"):
        data.to_messages({"conversations": [{"from": "robot", "value": "x"}]}, "sharegpt")


def test_loss_is_on_the_assistant_turns_only(tokenizer):
    example = data.tokenize_conversation(tokenizer, CONVERSATION, max_length=512)
    # ChatML: each assistant turn is trained through its end-of-turn token and newline
    assert trained_text(tokenizer, example) == "Paris.<|im_end|>\n|Rome.<|im_end|>\n"
    everything = data.tokenize_conversation(tokenizer, CONVERSATION, max_length=512, loss_on="all")
    assert everything["labels"] == everything["input_ids"]
    assert tokenizer.decode(everything["input_ids"]) == tokenizer.apply_chat_template(CONVERSATION, tokenize=False)


def test_truncation_keeps_max_length_and_drops_examples_without_response(tokenizer):
    records = [{"messages": CONVERSATION}]
    long = data.sft_examples(records, tokenizer, "auto", max_length=512, loss_on="responses", packing=False)[0]
    cut = data.tokenize_conversation(tokenizer, CONVERSATION, max_length=10)
    assert len(cut["input_ids"]) == 10 and cut["input_ids"] == long["input_ids"][:10]
    with pytest.raises(SnrtuneError, match="max_seq_length=10"):
        data.sft_examples(records, tokenizer, "auto", max_length=10, loss_on="responses", packing=False)


def test_packing_concatenates_whole_examples_up_to_max_length():
    examples = [{"input_ids": [i] * n, "labels": [i] * n} for i, n in enumerate([3, 4, 2, 5])]
    packed = data.pack(examples, max_length=7)
    assert [p["input_ids"] for p in packed] == [[0] * 3 + [1] * 4, [2] * 2 + [3] * 5]


def test_missing_chat_template_is_a_clear_error(tokenizer):
    bare = make_tokenizer()
    bare.chat_template = None
    with pytest.raises(SnrtuneError, match="no chat template"):
        data.ensure_chat_template(bare, None)
    data.ensure_chat_template(bare, "{% for m in messages %}{{ m['content'] }}{% endfor %}")
    assert data.render(bare, CONVERSATION[:2]) == "Be brief.Capital of France?"


def test_validation_split_is_seeded_and_disjoint():
    items = list(range(50))
    train, val = data.split_validation(items, 0.1, seed=3)
    assert len(val) == 5 and sorted(train + val) == items
    assert data.split_validation(items, 0.1, seed=3) == (train, val)
    assert data.split_validation(items, 0.01, seed=3)[1] != []  # at least one held out
    assert data.split_validation(items, 0.0, seed=3) == (items, [])
    with pytest.raises(SnrtuneError, match="val_fraction=1.5"):
        data.split_validation(items, 1.5, seed=0)


def test_local_files_load_by_suffix(tmp_path):
    rows = [{"instruction": "a", "input": "", "output": "b"}, {"instruction": "c", "input": "", "output": "d"}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "d.json").write_text(json.dumps(rows))
    pd.DataFrame(rows).to_parquet(tmp_path / "d.parquet")
    for name in ("d.jsonl", "d.json", "d.parquet"):
        assert data.load_records(str(tmp_path / name)) == rows
    (tmp_path / "d.csv").write_text("instruction,output\na,b\n")
    with pytest.raises(SnrtuneError, match="'.csv'"):
        data.load_records(str(tmp_path / "d.csv"))


def test_preference_rows_become_conversational():
    rows = data.preference_rows([{"prompt": "Q?", "chosen": "yes", "rejected": "no"}])
    assert rows == [{"prompt": [{"role": "user", "content": "Q?"}], "chosen": [{"role": "assistant", "content": "yes"}],
                     "rejected": [{"role": "assistant", "content": "no"}]}]
    with pytest.raises(SnrtuneError, match="rejected"):
        data.preference_rows([{"prompt": "Q?", "chosen": "yes"}])
