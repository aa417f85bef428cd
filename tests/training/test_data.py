"""Training data: formats, chat templates, response-only labels and packing (TRL SFTTrainer), validation split."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import transformers
from tiny import make_tokenizer

from snrtune.training import sft_data as data
from snrtune.errors import SnrtuneError
from snrtune.training.settings import load_settings
from snrtune.training.layout import datasets_for, load_tokenizer, sft_layout
from snrtune.training.trainer import build_trainer, training_args


def settings(values: dict):
    """The training settings `snrtune train` checks: the defaults with ``values`` on top."""
    return load_settings(None, assignments=values)

IGNORE = -100

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


CHATML_WITH_MARKERS = (
    "{% for message in messages %}{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' }}"
    "{% generation %}{{ message['content'] + '<|im_end|>' + '\n' }}{% endgeneration %}"
    "{% else %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def sft_trainer(model_dir, tmp_path, records, chat_template=None, **overrides):
    """The SFTTrainer `snrtune train` builds for ``records`` (its train_dataset is tokenized and labelled)."""
    cfg = settings({"val_fraction": 0.0, "chat_template": chat_template, "max_steps": 1, **overrides})
    tokenizer = load_tokenizer(model_dir, cfg)
    layout = sft_layout(tokenizer, cfg)
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    train_ds, _ = datasets_for("sft", data.load_records(str(path)), [], cfg, layout)
    args = training_args("sft", cfg, tmp_path / "out", False, layout)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation=cfg.attn_implementation)
    return build_trainer("sft", model, tokenizer, args, train_ds, None, [])


def trained_text(tokenizer, example):
    """The text of the labelled tokens, runs of labels joined by '|'."""
    pieces, run = [], []
    for token, label in zip(example["input_ids"], example["labels"]):
        if label == IGNORE:
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


def test_without_generation_markers_the_last_assistant_turn_is_trained(tiny_llama, tokenizer, tmp_path, capsys):
    """ChatML without {% generation %} (SmolLM2's kind): prompt-completion rows, loss on the last response."""
    assert not data.trains_assistant_turns(tokenizer)
    trainer = sft_trainer(tiny_llama, tmp_path, [{"messages": CONVERSATION}])
    example = trainer.train_dataset[0]
    assert trainer.args.completion_only_loss and not trainer.args.assistant_only_loss
    # the whole conversation is the input; only the final answer, through its end-of-turn token, is trained
    assert tokenizer.decode(example["input_ids"]) == tokenizer.apply_chat_template(CONVERSATION, tokenize=False)
    assert trained_text(tokenizer, example) == "Rome.<|im_end|>\n"
    assert "note: 1 of 1 conversations have earlier assistant turns, which are context only" in capsys.readouterr().out


def test_with_generation_markers_every_assistant_turn_is_trained(tiny_llama, tokenizer, tmp_path):
    trainer = sft_trainer(tiny_llama, tmp_path, [{"messages": CONVERSATION}], chat_template=CHATML_WITH_MARKERS)
    assert trainer.args.assistant_only_loss
    example = trainer.train_dataset[0]
    assert tokenizer.decode(example["input_ids"]) == tokenizer.apply_chat_template(CONVERSATION, tokenize=False)
    assert trained_text(tokenizer, example) == "Paris.<|im_end|>\n|Rome.<|im_end|>\n"


def test_loss_on_all_trains_every_token(tiny_llama, tokenizer, tmp_path):
    trainer = sft_trainer(tiny_llama, tmp_path, [{"messages": CONVERSATION}], loss_on="all")
    example = trainer.train_dataset[0]
    assert example["labels"] == example["input_ids"]
    assert tokenizer.decode(example["input_ids"]) == tokenizer.apply_chat_template(CONVERSATION, tokenize=False)


def test_alpaca_rows_train_the_output(tiny_llama, tokenizer, tmp_path):
    rows = [{"instruction": "Capital of France?", "input": "", "output": "Paris.", "system": "Be brief."}]
    trainer = sft_trainer(tiny_llama, tmp_path, rows)
    assert trained_text(tokenizer, trainer.train_dataset[0]) == "Paris.<|im_end|>\n"


def test_truncation_keeps_max_length_and_drops_examples_without_response(tiny_llama, tokenizer, tmp_path):
    rows = [{"messages": CONVERSATION}, {"messages": CONVERSATION[1:3]}]  # 79 tokens (prompt 74), 32 (prompt 26)
    full = sft_trainer(tiny_llama, tmp_path, rows).train_dataset
    assert [len(ex["input_ids"]) for ex in full] == [79, 32]
    # at 40 tokens the long conversation keeps no trained token: dropped; the short one is intact
    cut = sft_trainer(tiny_llama, tmp_path, rows, max_seq_length=40).train_dataset
    assert len(cut) == 1 and cut[0]["input_ids"] == full[1]["input_ids"]
    # at 29 the short one keeps its prompt and the first 3 response tokens
    cut = sft_trainer(tiny_llama, tmp_path, rows, max_seq_length=29).train_dataset
    assert cut[0]["input_ids"] == full[1]["input_ids"][:29] and sum(label != IGNORE for label in cut[0]["labels"]) == 3
    with pytest.raises(SnrtuneError, match="max_seq_length=10"):
        sft_trainer(tiny_llama, tmp_path, rows, max_seq_length=10)


def test_several_tokenizing_processes_give_the_same_rows(tiny_llama, tmp_path):
    rows = [{"instruction": f"Capital number {i}?", "input": "", "output": f"Answer {i}."} for i in range(8)]
    one = sft_trainer(tiny_llama, tmp_path, rows).train_dataset
    two = sft_trainer(tiny_llama, tmp_path, rows, dataset_num_proc=2).train_dataset
    assert two.to_list() == one.to_list()


def test_rows_without_an_assistant_turn_are_an_error():
    with pytest.raises(SnrtuneError, match="training row 1 has no assistant turn"):
        data.sft_rows([{"messages": CONVERSATION[:3]}, {"messages": CONVERSATION[:2]}], "auto", "prompt-completion")


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
    from snrtune.training.data_check import check_training_data

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
    from snrtune.training.data_check import check_training_data

    first = b'{"instruction": "q", "output": "a"}\n'
    path = tmp_path / "d.jsonl"
    path.write_bytes(first + b'{"instruction": "caf\xe9", "output": "a"}\n')
    with pytest.raises(SnrtuneError) as caught:
        check_training_data(path)
    offset = len(first) + len(b'{"instruction": "caf')
    assert f"row 2 is not UTF-8: byte {offset} of the file is 'e9'" in str(caught.value)
    assert path.read_bytes()[offset] == 0xE9


def test_hub_ids_are_not_checked_locally_and_say_so(tmp_path):
    from snrtune.training.data_check import check_records, check_training_data

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


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_examples_never_attend_across_examples(tiny_llama, tokenizer, tmp_path, attn):
    """TRL packs whole examples into one row whose position ids restart at each example; snrtune keeps that row
    a batch row (sdpa, eager) and transformers turns the position ids into a block-diagonal mask. The logits of
    example B packed after A, as compute_loss runs the model, must equal those of B alone; with positions
    running on, they differ."""
    import torch

    a = {"messages": CONVERSATION}  # the longer: best-fit decreasing puts it first
    b = {"messages": CONVERSATION[1:3]}
    trainer = sft_trainer(tiny_llama, tmp_path, [b, a], packing=True, max_seq_length=256, attn_implementation=attn)
    assert trainer.model.config._attn_implementation == attn and trainer.row_packed
    assert len(trainer.train_dataset) == 1 and trainer.train_dataset[0]["seq_lengths"] == [79, 32]
    batch = trainer.data_collator([trainer.train_dataset[0]])
    assert batch["position_ids"].tolist() == [list(range(79)) + list(range(32))]
    assert batch["attention_mask"].tolist() == [[1] * 111]  # what the Trainer counts tokens with
    assert batch["labels"][0, 79].item() == IGNORE  # no loss on predicting B's first token from A
    alone = sft_trainer(tiny_llama, tmp_path, [b], loss_on="all").train_dataset[0]["input_ids"]
    assert batch["input_ids"][0, 79:].tolist() == alone
    model = trainer.model.eval()
    with torch.no_grad():
        packed = trainer.compute_loss(model, dict(batch), return_outputs=True)[1].logits[0, 79:]
        single = model(input_ids=torch.tensor([alone])).logits[0]
        running = model(input_ids=batch["input_ids"], position_ids=torch.arange(111)[None]).logits[0, 79:]
    torch.testing.assert_close(packed, single, rtol=1e-4, atol=1e-5)
    assert (running - single).abs().max() > 1e-2  # the check can fail: attending to A changes B's logits


def test_row_packed_batches_train_exactly_as_trls_flattened_ones(tiny_llama, tokenizer, tmp_path):
    """Two packed rows of different lengths (the short one padded): snrtune's row batch gives the loss and the
    gradients of TRL's flattened padding-free batch of the same examples, and its attention mask counts exactly
    the real tokens (the tokens-seen budget); flash attention keeps TRL's flattened layout."""
    import torch
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from snrtune.training.trainer import packs_rows

    rows = [{"messages": CONVERSATION}, {"messages": CONVERSATION[1:3]}, {"messages": CONVERSATION[:3]}]
    trainer = sft_trainer(tiny_llama, tmp_path, rows, packing=True, max_seq_length=128)
    examples = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    lengths = [sum(ex["seq_lengths"]) for ex in examples]
    assert len(examples) == 2 and lengths[0] != lengths[1]
    batch = trainer.data_collator(examples)
    assert batch["input_ids"].shape == (2, max(lengths))
    assert batch["attention_mask"].sum().item() == sum(lengths) == sum(len(ex["input_ids"]) for ex in examples)
    assert trainer.args.include_num_input_tokens_seen == "non_padding"
    flat = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=True)(examples)
    assert flat["input_ids"].shape == (1, sum(lengths))
    assert (batch["labels"] != IGNORE).sum() == (flat["labels"] != IGNORE).sum()

    def loss_and_grads(inputs, compute):
        trainer.model.zero_grad(set_to_none=True)
        loss = compute(trainer, trainer.model, dict(inputs))
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}

    model = trainer.model.train()
    ours, our_grads = loss_and_grads(batch, type(trainer).compute_loss)
    theirs, their_grads = loss_and_grads(flat, transformers.Trainer.compute_loss)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert our_grads.keys() == their_grads.keys() and len(our_grads) == len(list(model.parameters()))
    for name in our_grads:
        torch.testing.assert_close(our_grads[name], their_grads[name], rtol=1e-4, atol=1e-6)
    assert not packs_rows("flash_attention_2") and packs_rows(None) and packs_rows("sdpa")


def test_tokenization_is_cached_beside_the_stored_rows(tiny_llama, tmp_path, monkeypatch):
    """Rows saved by the main process and read back memory-mapped: the trainer's tokenization is written beside
    them once, and another rank (RANK=1) reads the stored rows and that cache instead of tokenizing again."""
    import os

    cfg = settings({"val_fraction": 0.25, "max_steps": 1})
    rows = [{"instruction": f"Capital number {i}?", "input": "", "output": f"Answer {i}."} for i in range(8)]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    train_rows, val_rows = data.split_validation(data.load_records(str(path)), cfg.val_fraction, cfg.seed)
    tokenizer = load_tokenizer(tiny_llama, cfg)
    layout = sft_layout(tokenizer, cfg)
    args = training_args("sft", cfg, tmp_path / "out", True, layout)
    seen = []
    for rank in ("0", "1"):
        monkeypatch.setenv("RANK", rank)
        train_ds, val_ds = datasets_for("sft", train_rows, val_rows, cfg, layout, store=tmp_path / "store")
        assert (len(train_ds), len(val_ds)) == (6, 2)
        model = transformers.AutoModelForCausalLM.from_pretrained(tiny_llama)
        trainer = build_trainer("sft", model, tokenizer, args, train_ds, val_ds, [])
        files = [f["filename"] for f in trainer.train_dataset.cache_files]
        seen.append({f: os.stat(f).st_mtime_ns for f in files})
    assert seen[0] and seen[0] == seen[1]  # the same cache files, not rewritten
    assert all(f.startswith(str(tmp_path / "store" / "train")) and "cache-" in f for f in seen[0])


def test_the_loss_is_the_mean_over_trained_tokens_as_trl_computes_it(tiny_llama, tokenizer, tmp_path):
    """snrtune's SFTTrainer uses the model's own loss (faster than TRL's fused head): on a packed batch it is the
    mean cross-entropy over the trained tokens (by hand), and equals TRL's own compute_loss on TRL's own
    (flattened) batch of the same examples."""
    import torch
    import trl
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    rows = [{"messages": CONVERSATION}, {"messages": CONVERSATION[1:3]}, {"messages": CONVERSATION[:3]}]
    trainer = sft_trainer(tiny_llama, tmp_path, rows, packing=True, max_seq_length=128)
    examples = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    batch = trainer.data_collator(examples)
    flat = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=True)(examples)
    model = trainer.model.eval()
    with torch.no_grad():
        ours = trainer.compute_loss(model, dict(batch))
        theirs = trl.SFTTrainer.compute_loss(trainer, model, dict(flat))
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
    nll = [-torch.log_softmax(logits[r, t], -1)[labels[t + 1]] for r, labels in enumerate(batch["labels"])
           for t in range(len(labels) - 1) if labels[t + 1] != IGNORE]
    unpacked = sft_trainer(tiny_llama, tmp_path, rows).train_dataset
    assert len(nll) == sum(label != IGNORE for ex in unpacked for label in ex["labels"]) == 17
    torch.testing.assert_close(ours, torch.stack(nll).mean(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("multiple", [128, 16])
def test_pad_to_multiple_of_fixes_the_batch_shape_and_counts_only_real_tokens(multiple, tiny_llama, tmp_path,
                                                                              tokenizer):
    """pad_to_multiple_of: N pads each packed batch to a multiple of N (N = max_seq_length: one shape for every
    batch); the padding carries no label and is not counted as a token seen."""
    import math

    rows = [{"messages": CONVERSATION}, {"messages": CONVERSATION[1:3]}, {"messages": CONVERSATION[:3]}]
    trainer = sft_trainer(tiny_llama, tmp_path, rows, packing=True, max_seq_length=128, pad_to_multiple_of=multiple)
    examples = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    lengths = [sum(ex["seq_lengths"]) for ex in examples]
    batch = trainer.data_collator(examples)
    assert batch["input_ids"].shape == (2, math.ceil(max(lengths) / multiple) * multiple)
    assert batch["attention_mask"].sum().item() == sum(lengths)
    padding = batch["attention_mask"] == 0
    assert padding.any() and (batch["labels"][padding] == IGNORE).all()
