"""Best-first search for the most probable complete outputs, through a server's top-N lists.

The local search (:func:`tasksup.scoring.best_first_outputs`) sees every next-token probability; a
server shows only the N most probable next tokens of each expanded path. We run the same best-first
search over what is shown and bound what is not: below an expanded path of probability P whose
listed tokens have probabilities q_1 >= ... >= q_N, any unlisted token has probability at most
min(q_N, 1 - sum q), so every output hidden there has probability at most
U(path) = P * min(q_N, 1 - sum q). The result is **certified exact** (``certified=True``) when k
outputs were found and the k-th of them is at least as probable as max U over all expanded paths:
no hidden output can then enter the top k or reorder it. Otherwise the outputs are the best found
(each probability is exact for its path) and ``unseen_bound`` says how probable a missed one can be.

Paths are texts: the server tokenizes prompt + text for every request. For a path whose tokens are
the server's own tokenization of its text (what a trained model mostly generates) the probability
is that path's; docs/remote.md says what happens otherwise. A token with empty text (an end-of-text
token, as llama.cpp and vLLM render it) ends the output.
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass

from tasksup.errors import TasksupError
from tasksup.models.remote.model import top_logprobs
from tasksup.scoring import SearchResult


@dataclass
class RemoteSearchResult(SearchResult):
    certified: bool = False  # the outputs are provably the exact top k (see the module docstring)
    unseen_bound: float = 0.0  # the largest probability an output hidden by the top-N lists can have


def remote_best_first(lm, prompt: str, k: int, stop: str | None, max_tokens: int) -> RemoteSearchResult:
    if k < 1 or max_tokens < 1:
        raise TasksupError("top_outputs needs k >= 1 and max_tokens >= 1")
    counter = itertools.count()
    heap: list = []
    unseen = -math.inf  # log of max U over expanded paths
    expansions = 0

    def expand(text: str, logp: float, depth: int) -> None:
        nonlocal unseen, expansions
        top = sorted(top_logprobs(lm.client.complete(lm._top_body(prompt + text))).items(), key=lambda kv: -kv[1])
        expansions += 1
        listed = [math.exp(v) for _, v in top]
        hidden = min(listed[-1], max(0.0, 1.0 - sum(listed))) if len(listed) else 1.0
        if hidden > 0:
            unseen = max(unseen, logp + math.log(hidden))
        node = (text, logp, depth, top)
        push(node, 0)

    def push(node, rank: int) -> None:
        text, logp, depth, top = node
        if rank < len(top):
            heapq.heappush(heap, (-(logp + top[rank][1]), next(counter), node, rank))

    expand("", 0.0, 0)
    outputs: dict[str, float] = {}
    duplicates = 0
    while heap and len(outputs) < k:
        neg, _, parent, rank = heapq.heappop(heap)
        push(parent, rank + 1)
        text, _, depth, top = parent
        piece = top[rank][0]
        new = text + piece
        done = text if piece == "" else (new.split(stop, 1)[0] if stop is not None and stop in new else None)
        if done is not None:
            if done in outputs:
                duplicates += 1
            else:
                outputs[done] = math.exp(-neg)
        elif depth + 1 < max_tokens:
            expand(new, -neg, depth + 1)
    kth = math.log(min(outputs.values())) if len(outputs) == k else -math.inf
    certified = unseen == -math.inf or (len(outputs) == k and unseen <= kth)
    return RemoteSearchResult(list(outputs.items()), expansions, expansions, duplicates,
                              certified=certified, unseen_bound=math.exp(unseen) if unseen > -math.inf else 0.0)
