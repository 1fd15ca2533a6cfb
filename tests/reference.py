"""Slow, obvious reference implementations that the fast code paths are tested against.

Every function here runs one full forward pass per token sequence, takes the full log-softmax in
float64 and sums: no KV cache, no batching, no padding.
"""

from __future__ import annotations

import torch


@torch.inference_mode()
def sequence_logprob(model, ids: list[int], start: int = 1) -> float:
    """log P(ids[start:] | ids[:start]) under ``model``: one forward, full float64 log-softmax.

    ``start=1`` gives log P(ids) up to the first token; a later ``start`` skips terms that two
    sequences sharing ``ids[:start]`` have in common (they are equal and cancel in a difference).
    """
    logits = model(torch.tensor([ids])).logits[0, start - 1:-1].double()
    logp = torch.log_softmax(logits, dim=-1)
    return float(sum(logp[i - start, ids[i]] for i in range(start, len(ids))))


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def logprob_ratio(model, ids: list[int], given: list[int]) -> float:
    """log P(ids) - log P(given), the terms of their common prefix cancelled."""
    start = max(1, common_prefix(ids, given))
    return sequence_logprob(model, ids, start) - sequence_logprob(model, given, start)


@torch.inference_mode()
def next_token_logprobs(model, ids: list[int]) -> torch.Tensor:
    """The full float64 log-distribution of the token after ``ids``."""
    return torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].double(), dim=-1)


def in_context_logprob(lm, prompt: str, answer: str, terminator: str | None = None) -> float:
    """The definition: log P(tok(prompt + answer)) - log P(tok(prompt)), whole strings tokenized."""
    return logprob_ratio(lm.model, lm.encode(prompt + answer + (terminator or "")), lm.encode(prompt))


def separate_logprob(lm, prompt: str, answer: str, terminator: str | None = None) -> float:
    """Eq. 3 literally: tok(answer + terminator) on its own, appended to tok(prompt)."""
    p = lm.encode(prompt)
    return logprob_ratio(lm.model, p + lm.encode_bare(answer + (terminator or "")), p)
