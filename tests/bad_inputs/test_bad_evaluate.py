"""Bad inputs to `snrtune evaluate`: broken model directories, a broken or foreign run record, weights that
cannot be scored, a limit that leaves no document, a device that is not there, and the evaluation settings of the
workflow. Each: one line, exit 2, before lm-eval loads the model, no eval.json (docs/checks.md)."""

from __future__ import annotations

import json

import pytest
import torch
from bad_input_cases import check_bad_model, copy_model, model_cases, refused, set_weight
from workflow_project import SCHEMA, minimal

from snrtune.errors import SnrtuneError
from snrtune.workflow.preflight import preflight
from snrtune.workflow.schema import validate_config

torch.set_num_threads(1)


@pytest.mark.parametrize("case", model_cases("evaluate"))
def test_bad_model_directory(case, tiny_llama, tmp_path, capsys):
    check_bad_model(case, "evaluate", tiny_llama, tmp_path, capsys)


def evaluate(model, out, *extra):
    return ["evaluate", model, "--tasks", "snrtune_toolcall", "--out", out, *extra]


def test_evaluate_refuses_a_broken_run_record(tiny_llama, tmp_path, capsys):
    model = copy_model(tiny_llama, tmp_path / "model")
    (model / "snrtune_run.json").write_text('{"id": 3}')
    refused(evaluate(model, tmp_path / "e.json"), capsys, "snrtune_run.json': key 'id' is 3")
    assert not (tmp_path / "e.json").exists()


@pytest.mark.parametrize("value, words", [(float("nan"), "holds nan"), (float("inf"), "holds inf")])
def test_non_finite_weights_are_not_scored(value, words, tiny_llama, tmp_path, capsys):
    """A weight matrix with a NaN (a run that diverged without saying so) scored acc 0.0, status finished."""
    model = copy_model(tiny_llama, tmp_path / "model")
    set_weight(model, "model.layers.2.mlp.up_proj.weight", value)
    refused(evaluate(model, tmp_path / "e.json"), capsys, "model.safetensors", "weight "
            "'model.layers.2.mlp.up_proj.weight'", words, "a model with non-finite weights cannot be scored")
    assert not (tmp_path / "e.json").exists()


def test_the_run_record_of_another_model(tiny_llama, tmp_path, capsys):
    """evaluate --run-json of another model's run wrote that run's scores for this model."""
    record = tmp_path / "snrtune_run.json"
    record.write_text(json.dumps({"id": "SmolLM2/lora-s0", "model": "SmolLM2", "method": "lora", "seed": 0}))
    refused(evaluate(tiny_llama, tmp_path / "e.json", "--run-json", record), capsys,
            "--run-json", "is run 'SmolLM2/lora-s0' of model 'SmolLM2'", "is model 'tiny-llama'")
    assert not (tmp_path / "e.json").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_a_cuda_device_on_a_machine_without_one(tiny_llama, tmp_path, capsys):
    refused(evaluate(tiny_llama, tmp_path / "e.json", "--device", "cuda"), capsys,
            "--device cuda requested but this machine has no CUDA GPU; expected --device cpu")
    assert not (tmp_path / "e.json").exists()


@pytest.mark.parametrize("seed", ["-5", str(2**32), "x"])
def test_a_seed_numpy_cannot_take(seed, tiny_llama, tmp_path, capsys):
    refused(evaluate(tiny_llama, tmp_path / "e.json", "--seed", seed), capsys, "argument --seed:")


@pytest.mark.slow
@pytest.mark.parametrize("limit", ["0.0001", "snrtune_toolcall=0.001"])
def test_a_limit_that_leaves_no_document(limit, tiny_llama, tmp_path, capsys):
    """--limit 0.0001 of snrtune_toolcall's 60 documents is 0.006 documents: lm-eval rounds it up to one and its score
    was written as the task's."""
    refused(evaluate(tiny_llama, tmp_path / "e.json", "--limit", limit), capsys,
            "of task 'snrtune_toolcall''s 60 documents is", "it leaves none to score")
    assert not (tmp_path / "e.json").exists()


def test_the_preflight_checks_the_package_of_the_evaluation_backend(absent):
    absent("vllm")
    config = validate_config({"models": {"m": {"source": "org/model", "eval_backend": "vllm"}},
                                 "methods": ["full"]}, SCHEMA)
    with pytest.raises(SnrtuneError, match=r"'models.m.eval_backend': vllm needs the vllm package.*pip install vllm"):
        preflight(config)
    preflight(config, packages_here=False)  # under --sdm conda the jobs' environment is another one


# ---------------------------------------------------------------- the workflow's evaluate.batch_size

@pytest.mark.parametrize("value, ok", [("auto:0", False), ("auto:x", False), ("0", False), (0, False), ("-1", False), ("x", False),
                                       ("auto", True), ("auto:4", True), (8, True), ("8", True)])
def test_eval_batch_size_is_checked_by_the_evaluate_rule(value, ok):
    from snrtune.evaluation.options import parse_batch_size

    config = minimal(evaluate={"batch_size": value})
    if ok:
        validate_config(config, SCHEMA)
        parse_batch_size(str(value))
        return
    with pytest.raises(SnrtuneError, match="config key 'evaluate.batch_size'"):
        validate_config(config, SCHEMA)
    with pytest.raises(SnrtuneError, match="--batch-size"):
        parse_batch_size(str(value))


