"""Superposed Decoding (Shen et al., 2024): k drafts from one forward pass per step.

Each step feeds the model ONE input: the mix of the k drafts' last-token embeddings, weighted by
the drafts' normalised probabilities, on top of the KV cache of the mixes fed so far. The single
next-token distribution this gives is shared by every draft: the candidates are draft x token
with score log P(draft) + log p(token), and the best k that are not complete stay drafts (the
best 2k candidates are examined, as in the original). Complete candidates (``stop`` or EOS,
read as the exact search reads them) are kept aside; the search ends when no draft can still beat
the k-th complete output (scores only fall), when no draft is left, or after ``max_tokens``.

Differences from the original, deliberately: it interpolates the model's distribution with
n-gram tables built from a large corpus to filter incoherent drafts, and truncates the model's
distribution to its top tokens; we have no such tables (and for synthetic tasks none would fit),
so drafts are ranked by the model's shared distribution alone. Scores are *not* the model's
probabilities of the output strings: the distribution that scored a draft's tokens was
conditioned on the mix, not on the draft's own prefix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tasksup.compat import cache_kwarg
from tasksup.decoding.generate import PromptState
from tasksup.errors import TasksupError


@dataclass
class SuperposedResult:
    outputs: list[tuple[str, float]]  # (text, draft score as a probability), best first
    forward_tokens: int  # one per step after the prompt pass, whatever k is
    prompt_tokens: int


def mixed_embedding(embed: torch.nn.Embedding, tokens: list[int], logps: list[float]) -> torch.Tensor:
    """sum_i w_i E[token_i] with w = softmax(logps): the superposed input, shape [1, 1, d]."""
    w = torch.softmax(torch.tensor(logps, dtype=torch.float64), 0).to(embed.weight.dtype)
    vectors = embed(torch.tensor(tokens, device=embed.weight.device))
    return (w.to(vectors.device).unsqueeze(-1) * vectors).sum(0).view(1, 1, -1)


@torch.inference_mode()
def superposed_decode(state: PromptState, k: int) -> SuperposedResult:
    if k < 1:
        raise TasksupError("superposed decoding needs k >= 1 drafts")
    model, reader = state.lm.model, state.reader
    embed = model.get_input_embeddings()
    logp = torch.log_softmax(state.last_logits, -1)
    drafts: list[tuple[tuple[int, ...], float]] = [((), 0.0)]
    finished: dict[str, float] = {}
    cache, fed = None, 0
    for step in range(state.max_tokens):
        if step > 0:
            cache = cache if cache is not None else state.fork(1)
            mix = mixed_embedding(embed, [p[-1] for p, _ in drafts], [s for _, s in drafts])
            position = state.n + step - 1
            out = model(inputs_embeds=mix, **{cache_kwarg(model): cache}, use_cache=True,
                        attention_mask=torch.ones((1, position + 1), dtype=torch.long, device=state.device),
                        position_ids=torch.tensor([[position]], device=state.device))
            logp = torch.log_softmax(out.logits[0, -1].float(), -1)
            fed += 1
        top_lp, top_ids = logp.topk(min(2 * k, logp.shape[-1]))
        candidates = sorted(((s + float(lp), path + (int(t),)) for path, s in drafts
                             for lp, t in zip(top_lp.tolist(), top_ids.tolist())), key=lambda c: -c[0])[:2 * k]
        drafts = []
        for score, path in candidates:
            text = reader.complete(path)
            if text is not None:
                finished[text] = max(finished.get(text, float("-inf")), score)
            elif len(drafts) < k and len(path) < state.max_tokens and score > float("-inf"):
                drafts.append((path, score))
        kth = sorted(finished.values(), reverse=True)[k - 1] if len(finished) >= k else float("-inf")
        if not drafts or drafts[0][1] < kth:
            break
    best = sorted(finished.items(), key=lambda o: -o[1])[:k]
    return SuperposedResult([(text, math.exp(s)) for text, s in best], fed, state.n)
