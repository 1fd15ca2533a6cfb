"""Exact answer probabilities (paper Eq. 3, App. B) and exact top-k complete outputs.

Definitions
-----------
``tokenization="in_context"`` (default)::

    log P(answer | prompt) = log P(tok(prompt + answer)) - log P(tok(prompt))

each the tokenizer's own tokenization of the whole string. When tok(prompt) is a prefix of
tok(prompt + answer) -- the usual case -- this is the sum of the continuation tokens' log
probabilities, as lm-evaluation-harness splits context and continuation. When a BPE merge crosses
the prompt/answer boundary, both sequences are scored from their longest common prefix c and the
prompt's own tail P[c:] is subtracted (recorded as ``boundary_merge``).

``tokenization="separate"`` is Eq. 3 literally: tok(answer) on its own appended to tok(prompt). With
SentencePiece vocabularies this scores a spurious "▁" token ("174" -> "▁", "1", "7", "4"); it is
kept to compare with the paper. ``separate_differs`` records when the two token sequences differ.

``terminator`` (e.g. "\\n") is appended to every answer, so that "1" does not collect the mass of "17".

Cost
----
The shared prefix runs once (KV cache, logits of its last position only); all rows that continue
it (the K answers, plus the prompt's tail when a merge crosses the boundary) run in one pass on the
cache, packed into one sequence per prompt: a 4D attention mask lets each row's tokens see the prefix
and their own row only, so the prefix's KV is neither copied per row nor padded. Prompts are batched
too (left padding with explicit position ids). No prompt-length x vocab logits tensor is ever built.
"""

from __future__ import annotations

import copy
import heapq
import itertools
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from tasksup.compat import accepts, cache_kwarg, output_cache
from tasksup.errors import TasksupError

TOKENIZATIONS = ("in_context", "separate")


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


@dataclass
class ScoringPlan:
    """Token rows for one prompt: a shared prefix and the rows that continue it."""

    prefix: list[int]
    rows: list[list[int]]
    answer_rows: list[int]  # which row holds each answer's continuation
    remainder_row: int | None  # row holding the prompt's own tail, subtracted from every answer
    boundary_merge: list[bool]
    separate_differs: list[bool]
    prompt: list[int] = field(default_factory=list)  # the prompt's own tokens (``prefix`` is them, or shorter)


def plan_scoring(encode, encode_bare, prompt: str, answers: Sequence[str], terminator: str | None,
                 tokenization: str) -> ScoringPlan:
    """Tokenize one prompt and its answers into a :class:`ScoringPlan`.

    ``encode`` adds the tokenizer's special tokens (a BOS where the model expects one);
    ``encode_bare`` does not (used for answers under ``"separate"``).
    """
    if tokenization not in TOKENIZATIONS:
        raise TasksupError(f"tokenization must be one of {TOKENIZATIONS}, got {tokenization!r}")
    if not answers:
        raise TasksupError("no answers to score")
    suffix = terminator or ""
    for a in answers:
        if not isinstance(a, str) or a == "":
            raise TasksupError(f"answers must be non-empty strings, got {a!r}")
    p = encode(prompt)
    if not p:
        raise TasksupError("the prompt is empty")
    joint = [encode(prompt + a + suffix) for a in answers]
    shared = [common_prefix_len(p, f) for f in joint]
    merge = [c < len(p) for c in shared]
    tails = [encode_bare(a + suffix) for a in answers]
    differs = [p + t != f for t, f in zip(tails, joint)]
    if tokenization == "separate":
        return ScoringPlan(p, tails, list(range(len(answers))), None, merge, differs, p)
    c = min(shared)
    if c == 0:
        raise TasksupError("the prompt's first token merges with an answer; prepend a BOS or a longer prompt")
    rows, remainder = [], None
    if c < len(p):
        rows.append(p[c:])
        remainder = 0
    answer_rows = []
    for f in joint:
        answer_rows.append(len(rows))
        rows.append(f[c:])
    return ScoringPlan(p[:c], rows, answer_rows, remainder, merge, differs, p)


def _forward(model, input_ids, attention_mask, position_ids, past=None, keep_last_only=False):
    kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=True)
    if past is not None:
        kwargs[cache_kwarg(model)] = past
    if keep_last_only and accepts(model, "logits_to_keep"):
        kwargs["logits_to_keep"] = 1
    out = model(**kwargs)
    logits = out.logits[:, -1:] if keep_last_only else out.logits
    return logits, output_cache(out)


def _token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[targets] in float32 without materialising the full log-softmax."""
    logits = logits.float()
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def left_padded(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(ids, attention mask, position ids)`` of sequences left-padded to one width: each ends in the last
    column, its positions count from 0 at its first real token."""
    width = max(len(q) for q in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, q in enumerate(sequences):
        ids[i, width - len(q):] = torch.tensor(list(q))
        mask[i, width - len(q):] = 1
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


@torch.inference_mode()
def prompts_pass(model, prompts_ids: Sequence[Sequence[int]], pad_id: int):
    """One forward over several prompts, left-padded: ``(logits of each last position [P, 1, V], KV cache,
    attention mask [P, width])``. :func:`run_plans` (``prefix_state``) and the top-k search (``prompt_state``)
    both continue it, so scoring the prompts' answers and searching their top-k need one prompt pass; the
    search leaves the cache as it is, scoring then continues it in place."""
    device = next(model.parameters()).device
    ids, mask, pos = left_padded(prompts_ids, pad_id)
    logits, cache = _forward(model, ids.to(device), mask.to(device), pos.to(device), keep_last_only=True)
    return logits, cache, mask


def attention_bias(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``[b, q, keys]`` booleans (which keys each query sees) as the additive ``[b, 1, q, keys]`` mask that
    transformers passes on unchanged to eager and SDPA attention alike (a boolean one would be added as 0/1 by
    eager attention). It spans the whole cache: a layer that keeps only a sliding window shorter than the prompt
    and its continuations (Mistral's 4,096 tokens) is outside what it can describe."""
    bias = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return bias.masked_fill_(~allowed, torch.finfo(dtype).min).unsqueeze(1)


def _continuation_mask(prompt_mask: torch.Tensor, cached: int, q: int) -> torch.Tensor:
    """``[P, q, cached + q]`` booleans for q new tokens per row on a cache of ``cached`` columns: each sees its row's
    prompt (``prompt_mask`` [P, W], the first W columns) and itself; callers add the columns of its row or path."""
    allowed = torch.zeros((prompt_mask.shape[0], q, cached + q), dtype=torch.bool)
    allowed[:, :, :prompt_mask.shape[1]] = prompt_mask.bool().unsqueeze(1)
    allowed[:, torch.arange(q), cached + torch.arange(q)] = True  # a padding column sees itself only
    return allowed


@torch.inference_mode()
def run_plans(model, plans: Sequence[ScoringPlan], pad_id: int, prefix_state=None) -> list[np.ndarray]:
    """Answer log-probabilities (float64 arrays, one per plan) for a batch of plans.

    ``prefix_state``: :func:`prompts_pass` over exactly the plans' prefixes (``(logits, cache)``, the cache
    consumed), instead of running them here. Each row's first token is scored on the prefix's last logits; the
    rest of a plan's rows run as one sequence on the prefix's cache, each row seeing the prefix and itself.
    """
    device = next(model.parameters()).device
    ids, mask, pos = left_padded([p.prefix for p in plans], pad_id)  # every prefix ends in the last column
    if prefix_state is None:
        last_logits, cache = _forward(model, ids.to(device), mask.to(device), pos.to(device), keep_last_only=True)
    else:
        last_logits, cache = prefix_state[:2]

    owner = torch.tensor([i for i, p in enumerate(plans) for _ in p.rows], device=device)
    firsts = torch.tensor([r[0] for p in plans for r in p.rows], device=device)
    total = _token_logprobs(last_logits[owner, 0], firsts).cpu().double()
    width = max(sum(len(r) - 1 for r in p.rows) for p in plans)
    if width:
        prefix = mask.shape[1]
        feed = torch.full((len(plans), width), pad_id, dtype=torch.long)
        targets = torch.zeros_like(feed)
        rpos = torch.zeros_like(feed)
        row_of = torch.full_like(feed, -1)  # which row (over all plans) each fed token belongs to
        allowed = _continuation_mask(mask, prefix, width)
        row = 0
        for i, p in enumerate(plans):
            t = 0
            for r in p.rows:
                n = len(r) - 1
                feed[i, t:t + n], targets[i, t:t + n] = torch.tensor(r[:-1]), torch.tensor(r[1:])
                rpos[i, t:t + n] = len(p.prefix) + torch.arange(n)
                allowed[i, t:t + n, prefix + t:prefix + t + n] = torch.ones(n, n, dtype=torch.bool).tril()
                row_of[i, t:t + n] = row
                t, row = t + n, row + 1
        bias = attention_bias(allowed.to(device), next(model.parameters()).dtype)
        logits, _ = _forward(model, feed.to(device), bias, rpos.to(device), past=cache)
        lp = _token_logprobs(logits, targets.to(device)).cpu().double()
        real = row_of >= 0
        total.index_add_(0, row_of[real], lp[real])
    out, j = [], 0
    for p in plans:
        row_lp = total[j:j + len(p.rows)].numpy()
        j += len(p.rows)
        lp = row_lp[p.answer_rows]
        if p.remainder_row is not None:
            lp = lp - row_lp[p.remainder_row]
        out.append(lp)
    return out


# --------------------------------------------------------------------------------------------
# Exact top-k complete outputs


@dataclass
class SearchResult:
    """The k most probable complete outputs, best first, and what finding them cost."""

    outputs: list[tuple[str, float]]
    forward_tokens: int  # tokens fed through the model after the prompt pass
    expansions: int  # nodes whose next-token distribution was computed
    duplicates: int = 0  # complete token sequences skipped because an earlier one gave the same string
    prompt_tokens: int = 0
    exhausted: bool = False  # stopped by max_expansions before finding k outputs: ``outputs`` may be incomplete
    forwards: int = 0  # batched forwards after the prompt pass (each expands up to ``batch`` nodes)


CHILD_CHUNK = 64  # children an expanded node keeps, best first; further ones are recomputed on demand


@dataclass
class _Node:
    """A search node and a window of its children: ranks first_rank .. first_rank + len(sorted_ids) - 1."""

    tokens: tuple[int, ...]
    logp: float
    sorted_logp: np.ndarray = field(repr=False)
    sorted_ids: np.ndarray = field(repr=False)
    first_rank: int = 0
    columns: tuple[int, ...] = ()  # where ``tokens`` sit in the search tree's cache (see _SearchTree)


class _SearchTree:
    """The search trees of several prompts, grown in one KV cache: many nodes expanded per forward.

    After one left-padded pass over the prompts, a copy of their cache grows by one column per expanded node
    (the prompts' own cache is left as it is). A forward feeds the last token of every node to expand as a new
    column of its prompt's row; a 4D attention mask lets it see its prompt and the columns of its path's earlier
    tokens (its ancestors) only, so it computes what feeding its whole path would. Per forward the cache is
    appended to once per layer, whatever the number of nodes: no node copies its prompt's or its parent's KV.
    """

    def __init__(self, model, prompts_ids: Sequence[Sequence[int]], pad_id: int = 0, prompt_state=None):
        self.model, self.pad_id = model, pad_id
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.lengths = [len(q) for q in prompts_ids]
        if prompt_state is None:
            prompt_state = prompts_pass(model, prompts_ids, pad_id)
        logits, cache, mask = prompt_state[:3]
        self.cache = _detached(cache)
        self.prompt_mask = mask
        self.columns = mask.shape[1]  # the cache's length so far
        self.root_logps = torch.log_softmax(logits[:, -1].float(), -1)
        self.forward_tokens = [0] * len(prompts_ids)
        self.forwards = 0

    @torch.inference_mode()
    def expand(self, owners: Sequence[int], paths: Sequence[tuple[int, ...]],
               ancestors: Sequence[tuple[int, ...]]) -> tuple[torch.Tensor, list[int]]:
        """``[len(paths), V]`` log-probabilities of the token after each (non-empty) path of prompt ``owners[i]``,
        whose earlier tokens sit in columns ``ancestors[i]``; and the column each path's last token now holds."""
        members = [[] for _ in self.lengths]
        for n, o in enumerate(owners):
            members[o].append(n)
        q, c = max(len(m) for m in members), self.columns
        ids = torch.full((len(members), q), self.pad_id, dtype=torch.long)
        pos = torch.zeros_like(ids)
        allowed = _continuation_mask(self.prompt_mask, c, q)
        where = [(0, 0)] * len(paths)
        for o, nodes in enumerate(members):
            for j, n in enumerate(nodes):
                ids[o, j], pos[o, j] = paths[n][-1], self.lengths[o] + len(paths[n]) - 1
                allowed[o, j, list(ancestors[n])] = True
                where[n] = (o, j)
                self.forward_tokens[o] += 1
        logits, self.cache = _forward(self.model, ids.to(self.device), attention_bias(allowed.to(self.device), self.dtype),
                                      pos.to(self.device), past=self.cache)
        self.columns += q
        self.forwards += 1
        rows, cols = (torch.tensor(x, device=self.device) for x in zip(*where))
        return torch.log_softmax(logits[rows, cols].float(), -1), [c + j for _, j in where]


def _detached(cache):
    """A cache that can grow while ``cache`` stays as it is. transformers' per-layer caches append by making new
    tensors, so copies of the layer objects suffice: nothing is copied until the first append."""
    layers = getattr(cache, "layers", None)
    if not (layers and all(hasattr(x, "keys") and hasattr(x, "values") for x in layers)):
        raise TasksupError(f"the exact search needs a cache of attention keys and values per layer; this model's is a "
                           f"{type(cache).__name__}")
    new = copy.copy(cache)
    new.layers = [copy.copy(layer) for layer in layers]
    return new


SEARCH_BATCH = 16  # frontier nodes a search expands per forward (1: one node at a time). Measured 2026-12-07 with
# the tree in one cache, the bench's 3 prompts (760 tokens, 50k vocabulary), ms (expansions) at 4 / 8 / 16 / 32 nodes:
# 2 threads 262 (68) / 190 (72) / 157 (80) / 148 (96), 421 (128) / 270 / 202 / 189 (160), 505 (152) / 315 / 233 (160)
# / 203 (192); 1 thread alike. Beyond 16 the forwards saved are mostly spent on nodes a smaller batch never expands.
FORWARD_ROWS = 32  # searches of several prompts share a forward: each gets min(SEARCH_BATCH, FORWARD_ROWS // prompts)
# nodes. Fig. 6 (8 prompts at a time, 4 nodes each), 48 prompts on numeric6-l / -s: 32 rows 374 / 120 ms, 48 rows
# 367 / 131, 64 rows 351 / 141, 128 rows 383 / 130: no gain beyond the noise


class OutputReader:
    """When a generated token path is a complete output, and its text (shared by every decoder).

    A path is complete when its decoded text contains ``stop`` (the output is the text before it)
    or when its last token is an EOS (the output is the text before that token). Paths are decoded
    after the prompt's last 8 tokens, so that a tokenizer whose decoding depends on the left context
    (a leading-space marker, a multi-byte character) gives the text the path adds to the prompt.
    """

    def __init__(self, tokenizer, prompt_ids: Sequence[int], stop: str | None, eos_ids: set[int]):
        self.tokenizer, self.stop, self.eos_ids = tokenizer, stop, eos_ids
        self.anchor = list(prompt_ids[-8:])
        self.anchor_text = self._decode(self.anchor)

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def text(self, path: Sequence[int]) -> str:
        return self._decode(self.anchor + list(path))[len(self.anchor_text):]

    def complete(self, path: Sequence[int]) -> str | None:
        """The output text if ``path`` is complete, else None."""
        if path[-1] in self.eos_ids:
            return self.text(path[:-1])
        text = self.text(path)
        if self.stop is not None and self.stop in text:
            return text.split(self.stop, 1)[0]
        return None


class _Search:
    """The best-first search of one prompt, advanced by a driver that runs the forwards (so that the searches
    of several prompts share them): :meth:`want` pops the next nodes to expand, :meth:`give` takes their
    next-token distributions. See :func:`best_first_outputs` for what it finds and why it is exact."""

    def __init__(self, reader: OutputReader, root_logp: torch.Tensor, k: int, max_tokens: int,
                 max_expansions: int | None, batch: int, one_logp):
        self.reader, self.k, self.max_tokens, self.max_expansions, self.batch = reader, k, max_tokens, max_expansions, batch
        self.one_logp = one_logp  # node -> its next-token log-probabilities (a window recomputed: rare)
        self.heap: list = []
        self.counter = itertools.count()
        self.found: dict[str, float] = {}
        self.duplicates = self.expansions = 0
        self.exhausted = False
        self._push_child(self._window((), 0.0, root_logp), 0)

    @staticmethod
    def _window(path: tuple[int, ...], logp: float, lp: torch.Tensor, first_rank: int = 0) -> _Node:
        # Only a window of CHILD_CHUNK children is kept (memory per node O(chunk), not O(vocab): a flat
        # distribution can need thousands of expansions); lazy sibling pushes rarely reach its end.
        vals, idx = torch.topk(lp, min(first_rank + CHILD_CHUNK, lp.shape[-1]))
        return _Node(path, logp, vals[first_rank:].cpu().numpy().astype(np.float64), idx[first_rank:].cpu().numpy(),
                     first_rank)

    def _push_child(self, node: _Node, rank: int) -> None:
        if rank == node.first_rank + len(node.sorted_ids) and len(node.sorted_ids) == CHILD_CHUNK:
            w = self._window(node.tokens, node.logp, self.one_logp(node), rank)  # the next window, recomputed
            node.sorted_logp, node.sorted_ids, node.first_rank = w.sorted_logp, w.sorted_ids, rank
        i = rank - node.first_rank
        if i < len(node.sorted_ids) and np.isfinite(node.sorted_logp[i]):
            heapq.heappush(self.heap, (-(node.logp + node.sorted_logp[i]), next(self.counter), node, rank))

    def certified(self) -> list[tuple[str, float]]:
        """The outputs at least as probable as the best frontier node (which bounds every path not yet seen)."""
        bound = np.exp(-self.heap[0][0]) if self.heap else 0.0
        return sorted(((t, p) for t, p in self.found.items() if p >= bound), key=lambda o: -o[1])

    @property
    def done(self) -> bool:
        return self.exhausted or not self.heap or len(self.certified()) >= self.k

    def want(self) -> list[tuple]:
        """Pop up to ``batch`` frontier nodes, best first: record the complete ones, return the rest to expand, each
        as ``(path, log-probability, its parent's cache columns)``."""
        pending: list[tuple] = []
        while self.heap and len(pending) < self.batch and not (not pending and len(self.certified()) >= self.k):
            neg, _, parent, rank = heapq.heappop(self.heap)
            token = int(parent.sorted_ids[rank - parent.first_rank])
            self._push_child(parent, rank + 1)  # may move parent's window: read the token first
            path = parent.tokens + (token,)
            text = self.reader.complete(path)
            if text is not None:
                self.duplicates += text in self.found
                self.found[text] = max(self.found.get(text, 0.0), float(np.exp(-neg)))
            elif len(path) < self.max_tokens:
                if self.expansions == self.max_expansions:
                    heapq.heappush(self.heap, (neg, next(self.counter), parent, rank))  # unseen: it bounds the rest
                    self.exhausted = True
                    break
                self.expansions += 1
                pending.append((path, -neg, parent.columns))
        return pending

    def give(self, pending: list[tuple], logps: torch.Tensor, columns: list[int]) -> None:
        for (path, logp, above), lp, column in zip(pending, logps, columns):
            node = self._window(path, logp, lp)
            node.columns = above + (column,)
            self._push_child(node, 0)


@torch.inference_mode()
def best_first_outputs(model, tokenizer, prompt_ids: list[int], k: int, stop: str | None, max_tokens: int,
                       eos_ids: set[int], prompt_state=None, max_expansions: int | None = None,
                       batch: int | None = None) -> SearchResult:
    """The exact k most probable complete outputs, by best-first (uniform-cost) search.

    A token path is *complete* when its decoded text contains ``stop`` (the output is the text
    before it) or when it ends with an EOS token. Probabilities only shrink as a path grows, so the
    most probable frontier node bounds every path not yet seen: once k distinct outputs are at least
    that probable, they are the exact top k (the termination certificate), not a beam approximation.
    Each step pops up to ``batch`` (default :data:`SEARCH_BATCH`) frontier nodes, best first, and expands
    the incomplete ones in one forward; ``batch=1`` is the classic one-node-per-forward search, and every
    ``batch`` gives the same outputs. Each expanded node keeps its best ``CHILD_CHUNK`` children sorted
    (the next ones are recomputed if ever needed) and only its best not-yet-popped child sits in the heap
    (lazy sibling push), so heap and memory stay small even when a flat distribution makes the search
    expand thousands of nodes.

    Different token paths can decode to the same string (another tokenization of "174", or "\\n"
    versus "\\n\\n" as the terminator). Outputs are distinct strings: a string's probability is that
    of its most probable token path; other paths to the same string are counted in ``duplicates``.
    This equals ``answer_probs(..., terminator=stop)``, which scores the single canonical
    tokenization, whenever that tokenization is the most probable path (the usual case); otherwise it
    is larger (e.g. "is" + "\\n\\n" beating "is" + "\\n").

    ``max_expansions`` bounds the work (a flat distribution can need thousands of expansions): the
    search then stops with ``exhausted=True`` and the certified outputs found so far, which are still
    the most probable ones, in order, but may be fewer than k.
    """
    return best_first_many(model, tokenizer, [prompt_ids], k, stop, max_tokens, eos_ids, prompt_state=prompt_state,
                           max_expansions=max_expansions, batch=batch)[0]


@torch.inference_mode()
def best_first_many(model, tokenizer, prompts_ids: Sequence[list[int]], k: int, stop: str | None, max_tokens: int,
                    eos_ids: set[int], pad_id: int = 0, prompt_state=None, max_expansions: int | None = None,
                    batch: int | None = None) -> list[SearchResult]:
    """:func:`best_first_outputs` for several prompts at once: their searches share every forward (each adds
    up to ``batch`` rows; default: :data:`SEARCH_BATCH`, fewer when :data:`FORWARD_ROWS` are shared by many
    prompts), after one left-padded pass over the prompts (or ``prompt_state``, a
    :func:`prompts_pass` over exactly these prompts, left as it is)."""
    batch = min(SEARCH_BATCH, max(1, FORWARD_ROWS // len(prompts_ids))) if batch is None else batch
    if k < 1 or max_tokens < 1 or batch < 1:
        raise TasksupError("top_outputs needs k >= 1, max_tokens >= 1 and a search batch >= 1")
    if stop is None and not eos_ids:
        raise TasksupError("top_outputs needs a stop string or a tokenizer with an EOS token")
    tree = _SearchTree(model, prompts_ids, pad_id, prompt_state)

    def one_logp(i: int, node: _Node) -> torch.Tensor:
        return tree.expand([i], [node.tokens], [node.columns[:-1]])[0][0] if node.tokens else tree.root_logps[i]

    searches = [_Search(OutputReader(tokenizer, ids, stop, eos_ids), tree.root_logps[i], k, max_tokens, max_expansions,
                        batch, lambda node, i=i: one_logp(i, node)) for i, ids in enumerate(prompts_ids)]
    while True:
        wanted = [(i, s.want()) for i, s in enumerate(searches) if not s.done]
        wanted = [(i, pending) for i, pending in wanted if pending]
        if not wanted:
            break
        logps, columns = tree.expand([i for i, pending in wanted for _ in pending],
                                     [path for _, pending in wanted for path, _, _ in pending],
                                     [above for _, pending in wanted for _, _, above in pending])
        start = 0
        for i, pending in wanted:
            searches[i].give(pending, logps[start:start + len(pending)], columns[start:start + len(pending)])
            start += len(pending)
    return [SearchResult(s.certified()[:k], tree.forward_tokens[i], s.expansions, s.duplicates, len(prompts_ids[i]),
                         exhausted=s.exhausted, forwards=tree.forwards) for i, s in enumerate(searches)]
