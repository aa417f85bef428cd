"""`snrtune evaluate` on a tiny model and tiny local tasks, checked against log-likelihoods computed here."""

import json
import math
from pathlib import Path

import pytest
import torch
import transformers

import snrtune
from snrtune import cli
from snrtune.errors import SnrtuneError
from snrtune.evaluation.evaluate import evaluate_model
from snrtune.evaluation.options import limit_argument, parse_fewshot, parse_limit
from snrtune.evaluation.results import read_samples
from snrtune.task_dirs import resolve_task_dir

QUESTIONS = [
    {"question": "What is the capital of France?", "choices": ["Paris", "Rome", "Oslo"], "answer": 0},
    {"question": "Call the weather tool", "choices": ["get_weather", "Italy", "answer"], "answer": 0},
    {"question": "0 1 2 3", "choices": ["4", "abc", "JSON"], "answer": 2},
]
TEXTS = [{"text": "The capital of Italy is Rome."}, {"text": "user assistant system answer question"}]


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    """Two tiny tasks whose data paths are relative to their YAMLs (as the shipped ones are)."""
    root = tmp_path_factory.mktemp("tasks")
    (root / "data").mkdir()
    (root / "data" / "mc.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    (root / "data" / "text.jsonl").write_text("".join(json.dumps(t) + "\n" for t in TEXTS))
    (root / "yaml").mkdir()
    (root / "yaml" / "tiny_mc.yaml").write_text(
        "task: tiny_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: ../data/mc.jsonl\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: \"Question: {{question}}\\nAnswer:\"\n"
        "doc_to_choice: \"{{choices}}\"\ndoc_to_target: answer\nmetric_list:\n  - metric: acc\n"
    )
    (root / "yaml" / "tiny_ppl.yaml").write_text(
        "task: tiny_ppl\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: ../data/text.jsonl\n"
        "test_split: test\noutput_type: loglikelihood_rolling\ndoc_to_text: \"\"\ndoc_to_target: \"{{text}}\"\n"
        "metric_list:\n  - metric: word_perplexity\n"
    )
    (root / "yaml" / "tiny_gen.yaml").write_text(
        "task: tiny_gen\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: ../data/mc.jsonl\n"
        "test_split: test\noutput_type: generate_until\ndoc_to_text: \"Question: {{question}}\\nAnswer:\"\n"
        "doc_to_target: \"{{choices[answer]}}\"\ngeneration_kwargs:\n  until: [\"\\n\"]\n  max_gen_toks: 16\n"
        "  do_sample: false\nmetric_list:\n  - metric: exact_match\n"
    )
    return root / "yaml"


@pytest.fixture(scope="module")
def evaluated(tiny_llama, task_dir):
    return evaluate_model(tiny_llama, ["tiny_mc", "tiny_ppl"], include_paths=[str(task_dir)],
                          log_samples=True, batch_size=4)


def _continuation_logprob(model, tok, context: str, continuation: str) -> float:
    """log p(continuation | context), splitting tokens as lm-eval does (trailing spaces move right)."""
    stripped = context.rstrip()
    continuation = context[len(stripped):] + continuation
    whole = tok(stripped + continuation, add_special_tokens=False)["input_ids"]
    n_ctx = len(tok(stripped, add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([whole])).logits[0].double(), -1)
    return sum(logp[i - 1, whole[i]].item() for i in range(n_ctx, len(whole)))


def _text_logprob(model, tok, text: str) -> float:
    ids = [tok.bos_token_id] + tok(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
    return sum(logp[i - 1, ids[i]].item() for i in range(1, len(ids)))


@pytest.fixture(scope="module")
def tiny_lm(tiny_llama):
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    return model, transformers.AutoTokenizer.from_pretrained(tiny_llama)


def test_multiple_choice_matches_hand_loglikelihoods(evaluated, tiny_lm):
    model, tok = tiny_lm
    samples = sorted(evaluated["samples"]["tiny_mc"], key=lambda s: s["doc_id"])
    correct = []
    for q, sample in zip(QUESTIONS, samples):
        context = f"Question: {q['question']}\nAnswer:"
        mine = [_continuation_logprob(model, tok, context, " " + c) for c in q["choices"]]
        theirs = [resp[0] for resp in sample["filtered_resps"]]
        assert theirs == pytest.approx(mine, abs=1e-4)
        correct.append(float(max(range(3), key=mine.__getitem__) == q["answer"]))
    acc = sum(correct) / len(correct)
    assert evaluated["results"]["tiny_mc"]["acc"] == pytest.approx(acc)
    stderr = math.sqrt(acc * (1 - acc) / (len(correct) - 1))
    assert evaluated["results"]["tiny_mc"]["acc_stderr"] == pytest.approx(stderr)


def test_word_perplexity_matches_hand_computation(evaluated, tiny_lm):
    model, tok = tiny_lm
    total_ll = sum(_text_logprob(model, tok, t["text"]) for t in TEXTS)
    words = sum(len(t["text"].split()) for t in TEXTS)
    expected = math.exp(-total_ll / words)
    assert evaluated["results"]["tiny_ppl"]["word_perplexity"] == pytest.approx(expected, rel=1e-4)
    assert evaluated["higher_is_better"]["tiny_ppl"]["word_perplexity"] is False


def test_per_example_scores_reproduce_the_task_scores(evaluated, tiny_lm):
    """The compact per-example record: accuracy 0/1 per question; (loglikelihood, words) per paragraph, from which
    the corpus word perplexity is recomputed exactly (exp of summed loglik over summed words)."""
    from snrtune.aggregation import corpus_metric

    model, tok = tiny_lm
    mc = evaluated["per_example"]["tiny_mc"]
    assert mc["doc_ids"] == [0, 1, 2]
    assert mc["metrics"]["acc"]["aggregation"] == "mean"
    assert sum(mc["metrics"]["acc"]["values"]) / 3 == pytest.approx(evaluated["results"]["tiny_mc"]["acc"])
    ppl = evaluated["per_example"]["tiny_ppl"]["metrics"]["word_perplexity"]
    assert ppl["aggregation"] == "weighted_perplexity"
    for text, (ll, words) in zip(TEXTS, ppl["values"]):
        assert ll == pytest.approx(_text_logprob(model, tok, text["text"]), abs=1e-3)
        assert words == len(text["text"].split())
    assert corpus_metric(ppl["values"], "weighted_perplexity", axis=0) == pytest.approx(
        evaluated["results"]["tiny_ppl"]["word_perplexity"], rel=1e-9)


def test_shared_context_default_on_cpu_scores_as_lm_eval_s_own_pass(evaluated, tiny_llama, task_dir):
    """``evaluated`` shares each question's context (the CPU default); lm-eval's own pass gives the same scores."""
    plain = evaluate_model(tiny_llama, ["tiny_mc", "tiny_ppl"], include_paths=[str(task_dir)], log_samples=True,
                           batch_size=4, share_context=False)
    assert (evaluated["config"]["share_context"], plain["config"]["share_context"]) == (True, False)
    assert evaluated["results"]["tiny_mc"] == plain["results"]["tiny_mc"]
    assert evaluated["results"]["tiny_ppl"]["word_perplexity"] == pytest.approx(
        plain["results"]["tiny_ppl"]["word_perplexity"], rel=1e-6)
    for mine, theirs in zip(*(sorted(r["samples"]["tiny_mc"], key=lambda s: s["doc_id"]) for r in (evaluated, plain))):
        assert [x[0] for x in mine["filtered_resps"]] == pytest.approx([x[0] for x in theirs["filtered_resps"]],
                                                                       abs=1e-5)


def test_per_example_keeps_only_metrics_it_can_recompute():
    from snrtune.evaluation.results import per_example_scores

    samples = {"t": [{"doc_id": 1, "filter": "none", "metrics": ["acc", "f1"], "acc": 1.0, "f1": [1, 0]},
                     {"doc_id": 0, "filter": "none", "metrics": ["acc", "f1"], "acc": 0.0, "f1": [0, 0]},
                     {"doc_id": 0, "filter": "strict", "metrics": ["em"], "em": True},
                     {"doc_id": 1, "filter": "strict", "metrics": ["em"], "em": True}]}
    results = {"t": {"acc": 0.5, "f1": 0.7, "em/strict": 1.0}}
    out = per_example_scores(samples, results)
    assert out == {"t": {"doc_ids": [0, 1], "metrics": {
        "acc": {"aggregation": "mean", "values": [0.0, 1.0]},
        "em/strict": {"aggregation": "mean", "values": [1.0, 1.0]}}}}  # f1 is a corpus F1: not the mean of pairs
    assert per_example_scores(samples, {"t": {"acc": 0.4}}) == {}  # values that do not give the score: dropped


def test_record_identity_and_config(evaluated, tiny_llama):
    assert evaluated["run"] == {"id": "tiny-llama/base", "model": "tiny-llama", "method": "base",
                                "top_percent": None, "seed": None}
    assert evaluated["model_form"] == "base"
    assert evaluated["config"]["tasks"] == ["tiny_mc", "tiny_ppl"]
    assert evaluated["config"]["n_samples"] == {"tiny_mc": 3, "tiny_ppl": 2}
    assert evaluated["versions"]["lm_eval"] == "0.4.13"
    json.dumps(evaluated, allow_nan=False)  # the record is strict JSON


def test_cli_writes_eval_json_with_run_identity(tiny_llama, task_dir, tmp_path):
    run = {"id": "tiny-llama/spectrum-t25-s0", "model": "tiny-llama", "method": "spectrum", "top_percent": 25,
           "seed": 0, "stage": "sft"}
    (tmp_path / "run.json").write_text(json.dumps(run))
    out = tmp_path / "eval.json"
    rc = cli.main(["evaluate", str(tiny_llama), "--tasks", "tiny_mc", "--out", str(out), "--limit", "2",
                   "--include-path", str(task_dir), "--run-json", str(tmp_path / "run.json")])
    assert rc == 0
    record = json.loads(out.read_text())
    assert record["run"] == run and record["model_form"] == "merged-full-precision"
    assert record["config"]["limit"] == 2 and record["config"]["n_samples"] == {"tiny_mc": 2}
    assert "samples" not in record and "per_example" not in record
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.json", "run.json"]  # no temporary left over


def test_cli_log_samples_writes_compact_scores_and_a_samples_file(tiny_llama, task_dir, tmp_path):
    out = tmp_path / "base.json"
    assert cli.main(["evaluate", str(tiny_llama), "--tasks", "tiny_mc", "--out", str(out), "--limit", "2",
                     "--include-path", str(task_dir), "--log-samples"]) == 0
    record = json.loads(out.read_text())
    assert "samples" not in record
    assert record["per_example"]["tiny_mc"]["doc_ids"] == [0, 1]
    assert len(record["per_example"]["tiny_mc"]["metrics"]["acc"]["values"]) == 2
    assert json.loads((tmp_path / "base.samples.jsonl").read_text().splitlines()[0])["snrtune_output"] == {
        "written_by": "snrtune", "snrtune_version": snrtune.__version__, "step": "evaluate",
        "output": "--out .samples.jsonl"}  # the first line: evaluate's mark
    lines = read_samples(tmp_path / "base.samples.jsonl")
    assert [(line["task"], line["doc_id"]) for line in sorted(lines, key=lambda x: x["doc_id"])] == [
        ("tiny_mc", 0), ("tiny_mc", 1)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.json", "base.samples.jsonl"]


def test_a_per_task_limit_cuts_only_the_tasks_it_names(tiny_llama, task_dir, tmp_path):
    """--limit tiny_mc=2: the first 2 questions (as --limit 2 takes them), every paragraph of tiny_ppl."""
    out = tmp_path / "eval.json"
    assert cli.main(["evaluate", str(tiny_llama), "--tasks", "tiny_mc,tiny_ppl", "--out", str(out),
                     "--limit", "tiny_mc=2", "--include-path", str(task_dir), "--log-samples"]) == 0
    record = json.loads(out.read_text())
    assert record["config"]["limit"] == {"tiny_mc": 2}
    assert record["config"]["n_samples"] == {"tiny_mc": 2, "tiny_ppl": len(TEXTS)}
    assert record["per_example"]["tiny_mc"]["doc_ids"] == [0, 1]
    assert record["per_example"]["tiny_ppl"]["doc_ids"] == list(range(len(TEXTS)))
    # a fraction rounds up as lm-eval's --limit does: ceil(3 × 0.5) = 2 questions
    assert cli.main(["evaluate", str(tiny_llama), "--tasks", "tiny_mc", "--out", str(out),
                     "--limit", "tiny_mc=0.5", "--include-path", str(task_dir)]) == 0
    assert json.loads(out.read_text())["config"]["n_samples"] == {"tiny_mc": 2}


def test_bad_limits_are_one_line_errors(capsys):
    assert limit_argument("40") == 40 and limit_argument("a=3, b=0.25") == {"a": 3, "b": 0.25}
    assert parse_limit(40.0, ["a"]) == 40 and parse_limit(0.5, ["a"]) == 0.5 and parse_limit(None, ["a"]) is None
    assert parse_limit({"a": 3.0, "b": 0.25}, ["a", "b", "c"]) == {"a": 3, "b": 0.25}
    with pytest.raises(SnrtuneError, match="names task 'c', which is not in --tasks a,b"):
        parse_limit({"a": 3.0, "c": 2.0}, ["a", "b"])
    for text, message in [("a=0", "argument --limit: 0 is out of range"), ("a=3,b", "argument --limit: 'b' is not TASK=N"),
                          ("a=x", "argument --limit: 'x' is not a number")]:
        assert cli.main(["evaluate", "model", "--tasks", "a", "--out", "e.json", "--limit", text]) == 2
        assert capsys.readouterr().err.startswith(f"snrtune evaluate: error: {message}")


def test_shipped_tasks_resolve_to_existing_files(tmp_path):
    from snrtune.task_dirs import SHIPPED_TASKS

    resolved = resolve_task_dir(SHIPPED_TASKS, tmp_path / "tasks")
    for name in ("snrtune_toolcall", "snrtune_retention", "snrtune_ppl"):
        text = (resolved / f"{name}.yaml").read_text()
        path = text.split("test: ")[1].split("\n")[0].strip()
        assert path.startswith("/") and path.endswith(".jsonl") and Path(path).is_file(), path


def test_hub_task_offline_fails_with_one_line_naming_task(tiny_llama, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "eval.json"
    rc = cli.main(["evaluate", str(tiny_llama), "--tasks", "arc_easy", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and not out.exists()
    assert len(err.splitlines()) == 1 and "'arc_easy'" in err
    assert "HF_DATASETS_OFFLINE" in err and "HF_HUB_OFFLINE" in err and "HF_TOKEN" in err


def test_bad_arguments_are_one_line_errors(tiny_llama, tmp_path, capsys):
    assert cli.main(["evaluate", str(tiny_llama), "--tasks", "no_such_task_xyz", "--out",
                     str(tmp_path / "e.json")]) == 2
    assert "'no_such_task_xyz'" in capsys.readouterr().err
    with pytest.raises(SnrtuneError, match="arc_challenge=x"):
        parse_fewshot("arc_challenge=x", ["arc_challenge"])
    with pytest.raises(SnrtuneError, match="'gsm8k'"):
        parse_fewshot("gsm8k=5", ["arc_challenge"])
    assert parse_fewshot("mmlu=0", ["mmlu", "hellaswag", "snrtune_ppl"]) == {
        "mmlu": 0, "hellaswag": 10, "snrtune_ppl": None}


def test_model_args_reach_lm_eval_and_the_record(tiny_llama, task_dir, tmp_path, monkeypatch):
    """--model-args (k=v or JSON) is merged into lm-eval's model_args and recorded in eval.json."""
    import lm_eval

    from snrtune.evaluation.options import parse_model_args

    assert parse_model_args("parallelize=True,max_length=2048,device_map=auto") == {
        "parallelize": True, "max_length": 2048, "device_map": "auto"}
    assert parse_model_args('{"max_memory_per_gpu": "70GB", "parallelize": true}') == {
        "max_memory_per_gpu": "70GB", "parallelize": True}
    with pytest.raises(SnrtuneError, match="pretrained"):
        parse_model_args("pretrained=/elsewhere")
    with pytest.raises(SnrtuneError, match="k=v"):
        parse_model_args("parallelize")
    seen = {}
    real = lm_eval.simple_evaluate

    def spy(**kwargs):
        seen.update(model=kwargs["model"], model_args=dict(kwargs["model_args"]))
        return real(**kwargs)

    monkeypatch.setattr(lm_eval, "simple_evaluate", spy)
    out = tmp_path / "eval.json"
    assert cli.main(["evaluate", str(tiny_llama), "--tasks", "tiny_mc", "--out", str(out), "--limit", "1",
                     "--include-path", str(task_dir), "--model-args", "max_length=64,trust_remote_code=False"]) == 0
    expected = {"pretrained": str(tiny_llama), "dtype": "float32", "max_length": 64, "trust_remote_code": False}
    assert seen == {"model": "snrtune-hf", "model_args": expected}  # lm-eval's hf, sharing contexts on a CPU
    record = json.loads(out.read_text())
    assert record["config"]["model_args"] == expected and record["config"]["backend"] == "hf"
    plain = tmp_path / "plain.json"
    assert cli.main(["evaluate", str(tiny_llama), "--tasks", "tiny_mc", "--out", str(plain), "--limit", "1",
                     "--include-path", str(task_dir), "--no-share-context"]) == 0
    assert seen["model"] == "hf" and json.loads(plain.read_text())["config"]["share_context"] is False


def test_vllm_backend_without_vllm_is_a_clear_error(tiny_llama, tmp_path, capsys):
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    assert cli.main(["evaluate", str(tiny_llama), "--tasks", "tiny_mc", "--out", str(tmp_path / "e.json"),
                     "--backend", "vllm"]) == 2
    assert "needs the vllm package" in capsys.readouterr().err
    assert not (tmp_path / "e.json").exists()


def _prompts(samples_file) -> list:
    lines = read_samples(samples_file)
    return [line["arguments"][0] for line in lines]  # one [prompt, generation settings] pair per document


def test_prompt_and_generation_options_reach_lm_eval_and_shape_the_prompts(tiny_llama, task_dir, tmp_path,
                                                                        monkeypatch):
    """--system-instruction, --fewshot-as-multiturn, --gen-kwargs and --max-batch-size reach simple_evaluate
    (lm-eval 0.4.13's keywords), are recorded, and do what they say in lm-eval's logged prompts (ChatML)."""
    import lm_eval

    seen = []
    real = lm_eval.simple_evaluate

    def spy(**kwargs):
        seen.append({k: kwargs[k] for k in ("fewshot_as_multiturn", "system_instruction", "gen_kwargs",
                                            "max_batch_size", "batch_size", "apply_chat_template")})
        return real(**kwargs)

    monkeypatch.setattr(lm_eval, "simple_evaluate", spy)
    common = ["evaluate", str(tiny_llama), "--tasks", "tiny_gen", "--limit", "1", "--num-fewshot", "tiny_gen=1",
              "--include-path", str(task_dir), "--apply-chat-template", "--log-samples",
              "--system-instruction", "Answer with one word.", "--batch-size", "auto", "--max-batch-size", "2",
              "--model-args", "max_length=128"]  # a short context keeps lm-eval's batch-size probe cheap
    out = tmp_path / "multi.json"
    assert cli.main(common + ["--out", str(out), "--gen-kwargs", "max_gen_toks=3,temperature=0"]) == 0
    assert seen[-1] == {"fewshot_as_multiturn": True, "system_instruction": "Answer with one word.",
                        "gen_kwargs": {"max_gen_toks": 3, "temperature": 0}, "max_batch_size": 2,
                        "batch_size": "auto", "apply_chat_template": True}
    config = json.loads(out.read_text())["config"]
    assert (config["fewshot_as_multiturn"], config["system_instruction"], config["gen_kwargs"],
            config["max_batch_size"]) == (True, "Answer with one word.", {"max_gen_toks": 3, "temperature": 0}, 2)
    [(prompt, gen)] = _prompts(tmp_path / "multi.samples.jsonl")
    assert prompt.startswith("<|im_start|>system\nAnswer with one word.<|im_end|>\n")
    assert prompt.count("<|im_start|>user") == 2 and prompt.count("<|im_start|>assistant") == 2  # shot, then doc
    assert gen["max_gen_toks"] == 3 and gen["until"] == ["\n"]  # updates the task's own settings

    out = tmp_path / "single.json"
    assert cli.main(common + ["--out", str(out), "--no-fewshot-as-multiturn"]) == 0
    assert seen[-1]["fewshot_as_multiturn"] is False and seen[-1]["gen_kwargs"] is None
    [(prompt, gen)] = _prompts(tmp_path / "single.samples.jsonl")
    assert prompt.count("<|im_start|>user") == 1 and prompt.count("Question:") == 2  # the shot inside one turn
    assert gen["max_gen_toks"] == 16


@pytest.mark.parametrize("extra, message", [
    (["--fewshot-as-multiturn"], "--fewshot-as-multiturn needs --apply-chat-template"),
    (["--max-batch-size", "8"], "--max-batch-size 8 bounds --batch-size auto only"),
    (["--batch-size", "auto", "--max-batch-size", "0"], "argument --max-batch-size: 0 is out of range"),
    (["--gen-kwargs", "max_gen_toks"], "--gen-kwargs 'max_gen_toks' is not k=v"),
    (["--gen-kwargs", "max_gen_toks=8"], "changes generate_until tasks only, and none of --tasks generates (tiny_mc)"),
    (["--system-instruction", " "], "--system-instruction is empty"),
    (["--batch-size", "auto:x"], "'auto:x' is not a positive integer, 'auto' or 'auto:N'"),
])
def test_bad_prompt_option_combinations_fail_in_one_line_before_a_model_loads(extra, message, tiny_llama, task_dir,
                                                                              tmp_path, monkeypatch, capsys):
    import lm_eval

    def never(**kwargs):
        raise AssertionError("the model was to be loaded")

    monkeypatch.setattr(lm_eval, "simple_evaluate", never)
    out = tmp_path / "e.json"
    rc = cli.main(["evaluate", str(tiny_llama), "--tasks", "tiny_mc", "--out", str(out),
                   "--include-path", str(task_dir)] + extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and not out.exists()
    # one error line (a task's dataset, built to learn its output type, may draw a progress bar before it)
    assert [line for line in err if "error" in line] == err[-1:] and message in err[-1]


def test_a_diverged_run_is_recorded_without_loading_the_model(tiny_llama, tmp_path, capsys, monkeypatch):
    """snrtune_run.json says diverged (merge copied it from metrics.json): eval.json says so, with the run and
    the config but no scores, one warning line, exit 0, and lm-eval never runs on the NaN weights."""
    import lm_eval

    def refuse(*args, **kwargs):
        raise AssertionError("lm-eval ran on a diverged model")

    monkeypatch.setattr(lm_eval, "simple_evaluate", refuse)
    run = {"id": "tiny-llama/lora-s0", "model": "tiny-llama", "method": "lora", "top_percent": None, "seed": 0,
           "stage": "sft", "model_form": "merged-full-precision", "status": "diverged"}
    (tmp_path / "run.json").write_text(json.dumps(run))
    out = tmp_path / "eval.json"
    rc = cli.main(["evaluate", str(tiny_llama), "--tasks", "snrtune_ppl,snrtune_toolcall", "--out", str(out),
                   "--limit", "2", "--run-json", str(tmp_path / "run.json")])
    assert rc == 0
    err = capsys.readouterr().err
    assert err == (f"snrtune evaluate: warning: run tiny-llama/lora-s0 diverged in training (status diverged in "
                   f"{tmp_path / 'run.json'}): its weights were not evaluated; {out} records the run with status "
                   "diverged and no scores\n")
    record = json.loads(out.read_text())
    assert record["status"] == "diverged" and record["results"] == {} and record["run"] == run
    assert record["config"]["tasks"] == ["snrtune_ppl", "snrtune_toolcall"] and record["config"]["limit"] == 2
    assert record["model_form"] == "merged-full-precision"
