"""snrtune's lm-eval model that runs a shared context once (snrtune.evaluation.shared_context): the same
log-likelihoods and greedy flags as lm-eval's own HFLM pass, in fewer model passes, on every tiny architecture."""

import pytest
import torch

from snrtune.errors import SnrtuneError
from snrtune.evaluation.shared_context import (equal_length_batches, shared_context_class, shared_groups,
                                               use_shared_context)
from tiny import ARCHITECTURES

# (context tokens, continuation tokens): two 4-choice questions with 5-token contexts, one 3-choice question with
# a 3-token context, continuations of 1 to 4 tokens, one question whose choices are all one token, and two
# requests whose context nobody shares (they go through lm-eval's own pass)
REQUESTS = [
    ([5, 6, 7, 8, 9], [10]), ([5, 6, 7, 8, 9], [11, 12]), ([5, 6, 7, 8, 9], [13, 14, 15, 16]),
    ([5, 6, 7, 8, 9], [17, 18]),
    ([20, 21, 22, 23, 24], [25, 26, 27]), ([20, 21, 22, 23, 24], [28]), ([20, 21, 22, 23, 24], [29, 30]),
    ([20, 21, 22, 23, 24], [31]),
    ([40, 41, 42], [43, 44]), ([40, 41, 42], [45]), ([40, 41, 42], [46, 47, 48]),
    ([50, 51], [52]), ([50, 51], [53]),
    ([60, 61, 62, 63], [64, 65]), ([70], [71, 72, 73]),
]


def requests():
    return [((f"ctx{i}", f"cont{i}"), ctx, cont) for i, (ctx, cont) in enumerate(REQUESTS)]


def test_groups_and_equal_length_batches():
    groups, alone = shared_groups(requests())
    assert sorted(map(tuple, groups)) == sorted([(5, 6, 7, 8, 9), (20, 21, 22, 23, 24), (40, 41, 42), (50, 51)])
    assert groups[(20, 21, 22, 23, 24)] == [4, 5, 6, 7] and alone == [13, 14]
    batches = equal_length_batches(list(groups), 4)
    assert [[len(c) for c in b] for b in batches] == [[5, 5], [3], [2]]  # longest first, one length a batch
    assert [len(b) for b in equal_length_batches(list(groups), 1)] == [1, 1, 1, 1]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_same_loglikelihoods_as_lm_eval_in_fewer_passes(arch, tiny_model_factory):
    from lm_eval.models.huggingface import HFLM

    lm = shared_context_class()(pretrained=str(tiny_model_factory(arch)), dtype="float32", batch_size=4,
                                device="cpu")
    passes = []
    hook = lm.model.register_forward_pre_hook(lambda module, args: passes.append(1))
    try:
        theirs = HFLM._loglikelihood_tokens(lm, requests(), disable_tqdm=True)
        their_passes = len(passes)
        passes.clear()
        mine = lm._loglikelihood_tokens(requests(), disable_tqdm=True)
    finally:
        hook.remove()
    assert [m[0] for m in mine] == pytest.approx([t[0] for t in theirs], abs=1e-5)
    assert [m[1] for m in mine] == [t[1] for t in theirs]
    # lm-eval: 15 requests in batches of 4 (its one-token grouping merges [50, 51]'s two) = 4 passes;
    # here: the 5-token contexts together, the 3-token one, the 2-token one (all one-token choices: no second
    # pass) = 2 + 2 + 1, and one lm-eval pass for the two unshared requests
    assert (their_passes, len(passes)) == (4, 6)


def test_hand_computed_loglikelihood_of_a_shared_context(tiny_llama):
    """log p(cont | ctx) summed over the continuation's tokens from one plain forward pass of ctx + cont."""
    lm = shared_context_class()(pretrained=str(tiny_llama), dtype="float32", batch_size=4, device="cpu")
    reqs = requests()[:4]
    mine = lm._loglikelihood_tokens(reqs, disable_tqdm=True)
    for (_, ctx, cont), (logprob, greedy) in zip(reqs, mine):
        with torch.no_grad():
            logp = torch.log_softmax(lm.model(torch.tensor([ctx + cont])).logits[0].double(), -1)
        rows = range(len(ctx) - 1, len(ctx) + len(cont) - 1)
        assert logprob == pytest.approx(sum(logp[r, t].item() for r, t in zip(rows, cont)), abs=1e-5)
        assert greedy == all(int(logp[r].argmax()) == t for r, t in zip(rows, cont))


def test_share_context_is_the_cpu_default_of_the_hf_backend_only():
    assert [use_shared_context(None, d, "hf") for d in ("cpu", "cuda", "cuda:1")] == [True, False, False]
    assert (use_shared_context(False, "cpu", "hf"), use_shared_context(True, "cuda", "hf")) == (False, True)
    assert use_shared_context(None, "cuda", "vllm") is False
    with pytest.raises(SnrtuneError, match="^--share-context works with --backend hf, not vllm"):
        use_shared_context(True, "cuda", "vllm")
