"""lm-eval's Hugging Face model, scoring the continuations of one context from a single pass over that context.

A multiple-choice question asks lm-eval for the log-likelihood of every choice after the same prompt; its ``hf``
model runs prompt + choice once per choice, so the prompt is computed as many times as there are choices
(snrtune_retention: 4 per question; MMLU, ARC, HellaSwag alike). Here the requests that share a tokenized context
run it once, keep its key/value cache, and score every continuation on a copy of that cache: the same tokens,
the same positions and the same causal attention as lm-eval's pass, so the same log-probabilities up to float
rounding (tests/evaluation/test_shared_context.py compares both on the six tiny architectures).

It is lm-eval's ``HFLM`` with one method replaced (``_loglikelihood_tokens``); requests without a shared context
(a tool call's single target, perplexity windows), seq2seq models and requests lm-eval would truncate go through
lm-eval's own code unchanged. A pass takes up to ``batch_size`` contexts of one length (no padding), then their
continuations as one batch, so on a CPU, where a pass costs in proportion to its tokens, a 4-choice question
costs about a third of lm-eval's four rows; on a GPU lm-eval's wide batches of mixed lengths can be faster, so it
is on by default on the CPU only (``snrtune evaluate --share-context``).
"""

from __future__ import annotations

from functools import cached_property

from snrtune.errors import SnrtuneError

MODEL_NAME = "snrtune-hf"  # the lm-eval registry name of the model class below


def use_shared_context(choice: bool | None, device: str, backend: str) -> bool:
    """--share-context / --no-share-context, or by default on for the hf backend on a CPU."""
    if backend != "hf":
        if choice:
            raise SnrtuneError(f"--share-context works with --backend hf, not {backend}; expected --backend hf or "
                               "no --share-context")
        return False
    return device == "cpu" if choice is None else choice


def lm_eval_model(shared: bool, backend: str) -> str:
    """The lm-eval model to ask simple_evaluate for (registering snrtune's when it is the one)."""
    if not shared:
        return backend
    register()
    return MODEL_NAME


def register() -> None:
    from lm_eval.api.registry import MODEL_REGISTRY, register_model

    if MODEL_NAME not in MODEL_REGISTRY:
        register_model(MODEL_NAME)(shared_context_class())


def shared_groups(requests) -> tuple[dict[tuple, list[int]], list[int]]:
    """Request indices by context tokens (the groups of two or more), and the rest."""
    by_context: dict[tuple, list[int]] = {}
    for index, (_, context, _) in enumerate(requests):
        by_context.setdefault(tuple(context), []).append(index)
    shared = {ctx: idx for ctx, idx in by_context.items() if len(idx) > 1}
    alone = [idx[0] for idx in by_context.values() if len(idx) == 1]
    return shared, alone


def equal_length_batches(contexts: list[tuple], size: int) -> list[list[tuple]]:
    """Contexts in batches of at most ``size``, all of one length within a batch (no padding, so every row's
    positions and attention are those of the context alone), longest first."""
    by_length: dict[int, list[tuple]] = {}
    for ctx in contexts:
        by_length.setdefault(len(ctx), []).append(ctx)
    batches = []
    for length in sorted(by_length, reverse=True):
        same = by_length[length]
        batches.extend(same[i:i + size] for i in range(0, len(same), size))
    return batches


def shared_context_class():
    import inspect

    import torch
    import torch.nn.functional as F
    from lm_eval.models.huggingface import HFLM
    from tqdm import tqdm

    class SharedContextLM(HFLM):
        def _loglikelihood_tokens(self, requests, disable_tqdm=False, override_bs=None):
            if self.backend != "causal":
                return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
            groups, alone = shared_groups(requests)
            too_long = [ctx for ctx, idx in groups.items()
                        if any(len(ctx) + len(requests[i][2]) > self.max_length + 1 for i in idx)]
            for ctx in too_long:  # lm-eval truncates these from the left, each its own way
                alone.extend(groups.pop(ctx))
            answers: list = [None] * len(requests)
            if alone:
                alone.sort()
                for i, answer in zip(alone, super()._loglikelihood_tokens(
                        [requests[i] for i in alone], disable_tqdm=disable_tqdm, override_bs=override_bs)):
                    answers[i] = answer
            size = self.batch_size if isinstance(self.batch_size, int) else self.max_batch_size
            bar = tqdm(total=sum(map(len, groups.values())), disable=disable_tqdm or self.rank != 0,
                       desc="Running loglikelihood requests (one pass per shared context)")
            for batch in equal_length_batches(list(groups), max(1, size)):
                scored = self._score_contexts([list(ctx) for ctx in batch],
                                              [[requests[i][2] for i in groups[ctx]] for ctx in batch])
                for ctx, answers_of_ctx in zip(batch, scored):
                    for i, answer in zip(groups[ctx], answers_of_ctx):
                        answers[i] = answer
                        if requests[i][0] is not None:
                            self.cache_hook.add_partial("loglikelihood", requests[i][0], answer)
                    bar.update(len(groups[ctx]))
            bar.close()
            return answers

        def _log_softmax(self, logits):  # as lm-eval's pass takes it
            return F.log_softmax(logits, dim=-1, dtype=self.softmax_dtype)

        @cached_property
        def _forward_options(self) -> tuple[dict, str]:
            """Logits of the last position only where the model offers it, and its cache argument's name
            (transformers renamed ``past_key_values`` to ``cache`` in 5.x)."""
            params = inspect.signature(self.model.forward).parameters
            return ({"logits_to_keep": 1} if "logits_to_keep" in params else {},
                    "cache" if "cache" in params else "past_key_values")

        def _score_contexts(self, contexts: list[list[int]], continuations: list[list[list[int]]]):
            """Per context, (log p(continuation | context), greedy) per continuation, from one pass over the
            contexts (all of one length).

            The context's last position predicts each of its continuations' first token; the continuations'
            tokens but the last then run as one right-padded batch, each row on a copy of its context's cache
            (padding after a row's tokens is never attended to by them)."""
            last_only, cache_key = self._forward_options
            device = self.device
            with torch.no_grad(), torch.autocast(device_type=device.type, dtype=self.mixed_precision_dtype,
                                                 enabled=self.mixed_precision_dtype is not None):
                out = self.model(torch.tensor(contexts, device=device), use_cache=True, **last_only)
                first = self._log_softmax(out.logits[:, -1])  # [contexts, vocab]
                cache = out.get("cache", out.get("past_key_values"))
                rows = [(c, cont) for c, conts in enumerate(continuations) for cont in conts]
                rest = [cont[:-1] for _, cont in rows]
                width = max(map(len, rest))
                later = None
                if width:
                    if cache is None:
                        raise SnrtuneError(f"{type(self.model).__name__} returns no key/value cache, which "
                                           "--share-context needs; expected a cache-capable model or "
                                           "--no-share-context")
                    cache.batch_select_indices(torch.tensor([c for c, _ in rows], device=device))
                    batch = torch.tensor([r + [contexts[c][-1]] * (width - len(r)) for r, (c, _) in zip(rest, rows)],
                                         device=device)
                    later = self._log_softmax(self.model(batch, use_cache=True, **{cache_key: cache}).logits)
            answers: list[list[tuple[float, bool]]] = [[] for _ in contexts]
            for row, (c, cont) in enumerate(rows):
                scores = [first[c]] + [later[row, j] for j in range(len(cont) - 1)]
                logprob = sum(float(s[token]) for s, token in zip(scores, cont))
                greedy = all(int(s.argmax()) == token for s, token in zip(scores, cont))
                answers[c].append((logprob, greedy))
            return answers

    return SharedContextLM
