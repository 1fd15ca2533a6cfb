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


def slow_per_prompt_choice(records: list[dict], threshold: float = 0.9) -> dict | None:
    """``tasksup.metrics.per_prompt_choice`` the obvious way, with plain loops over plain floats."""
    import math

    n = committed = first = last = tied = majority_prompts = majority_followed = 0
    by_position: list[int] = []
    shortest = None
    for r in records:
        if "example_tasks" not in r or len([c for c in r["counts"] if c > 0]) < 2:
            continue
        n += 1
        probs = [math.exp(x) for x in r["logprobs"][:len(r["tasks"])]]
        best = max(probs)
        winners = [t for t, p in zip(r["tasks"], probs) if p == best]
        chosen = winners[0] if len(winners) == 1 else None
        if chosen is None:
            tied += 1
        elif best / sum(probs) >= threshold:
            committed += 1
        first += chosen is not None and r["example_tasks"][0] == chosen
        last += chosen is not None and r["example_tasks"][-1] == chosen
        shortest = len(r["example_tasks"]) if shortest is None else min(shortest, len(r["example_tasks"]))
        for i, t in enumerate(r["example_tasks"]):
            by_position += [0] * (i + 1 - len(by_position))
            by_position[i] += chosen is not None and t == chosen
        top = max(r["counts"])
        if r["counts"].count(top) == 1:
            majority_prompts += 1
            majority_followed += chosen == r["tasks"][r["counts"].index(top)]
    if n == 0:
        return None
    return {"n_prompts": n, "threshold": threshold, "committed": committed / n, "follows_example_1": first / n,
            "follows_last_example": last / n, "follows_example_by_position": [c / n for c in by_position[:shortest]],
            "n_majority_prompts": majority_prompts,
            "follows_majority": majority_followed / majority_prompts if majority_prompts else None, "n_tied": tied}
