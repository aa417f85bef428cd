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


# ---------------------------------------------------------------- data_check: the pre-flight check

def test_max_rows_checks_the_first_rows_fully_and_the_whole_file_structurally(tmp_path):
    from snrtune.data_check import check_training_data

    good = {"instruction": "q", "output": "a"}
    rows = [json.dumps(good)] * 4 + [json.dumps({"instruction": "q", "output": None})] + [json.dumps(good)] * 5
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(rows) + "\n")
    summary = check_training_data(path, "auto", "sft", max_rows=3)
    assert (summary.kind, summary.format, summary.rows, summary.checked_rows) == ("local", "alpaca", 10, 3)
    import hashlib

    assert summary.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(SnrtuneError, match=r"row 5: field 'output' is null"):
        check_training_data(path, "auto", "sft")  # every row: the null output is found
    path.write_bytes(path.read_bytes() + b"\n")  # a blank last line is found even past max_rows
    with pytest.raises(SnrtuneError, match="row 11 is a blank line"):
        check_training_data(path, "auto", "sft", max_rows=3)
    path.write_bytes(path.read_bytes()[:-1] + b'{"instruction": "\xff"}\n')
    with pytest.raises(SnrtuneError, match=r"row 11 is not UTF-8: byte \d+ of the file is 'ff'"):
        check_training_data(path, "auto", "sft", max_rows=3)


def test_the_utf8_error_names_the_exact_byte(tmp_path):
    from snrtune.data_check import check_training_data

    first = b'{"instruction": "q", "output": "a"}\n'
    path = tmp_path / "d.jsonl"
    path.write_bytes(first + b'{"instruction": "caf\xe9", "output": "a"}\n')
    with pytest.raises(SnrtuneError) as caught:
        check_training_data(path)
    offset = len(first) + len(b'{"instruction": "caf')
    assert f"row 2 is not UTF-8: byte {offset} of the file is 'e9'" in str(caught.value)
    assert path.read_bytes()[offset] == 0xE9


def test_hub_ids_are_not_checked_locally_and_say_so(tmp_path):
    from snrtune.data_check import check_records, check_training_data

    summary = check_training_data("org/dataset", "auto", "sft", max_rows=10)
    assert summary.kind == "hub" and summary.checked_rows == 0 and "not checked locally" in summary.note
    with pytest.raises(SnrtuneError, match=r"data 'org/dataset', row 2: field 'output' is null"):
        check_records([{"instruction": "q", "output": "a"}, {"instruction": "q", "output": None}],
                      "auto", "sft", "org/dataset")  # once loaded, a hub dataset's rows get the same check
    with pytest.raises(SnrtuneError, match="neither an existing file nor a hub dataset id"):
        check_training_data(str(tmp_path / "missing.jsonl"))


def test_the_checked_rows_load_exactly_as_written(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "héllo"}, {"role": "assistant", "content": "x"}], "meta": 1},
            {"messages": [{"role": "assistant", "content": "y"}], "meta": "a string this time"}]
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(r, ensure_ascii=False) + "\r\n" for r in rows).encode())
    assert data.load_records(str(path)) == rows  # BOM and CRLF tolerated; no type unification across rows
