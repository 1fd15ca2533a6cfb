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
it (the K answers, plus the prompt's tail when a merge crosses the boundary) run in one batched
pass on the cache. Prompts are batched too (left padding with explicit position ids). No
prompt-length x vocab logits tensor is ever built.
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


@torch.inference_mode()
def run_plans(model, plans: Sequence[ScoringPlan], pad_id: int, prefix_state=None) -> list[np.ndarray]:
    """Answer log-probabilities (float64 arrays, one per plan) for a batch of plans.

    ``prefix_state``: :func:`prompts_pass` over exactly the plans' prefixes (``(logits, cache)``, the cache
    consumed), instead of running them here.
    """
    device = next(model.parameters()).device
    ids, mask, pos = left_padded([p.prefix for p in plans], pad_id)  # every prefix ends in the last column
    if prefix_state is None:
        last_logits, cache = _forward(model, ids.to(device), mask.to(device), pos.to(device), keep_last_only=True)
    else:
        last_logits, cache = prefix_state[:2]

    owner = [i for i, p in enumerate(plans) for _ in p.rows]
    rows = [r for p in plans for r in p.rows]
    width = max(len(r) for r in rows)
    rids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    rmask = torch.zeros((len(rows), width), dtype=torch.long)
    for j, r in enumerate(rows):
        rids[j, :len(r)] = torch.tensor(r)
        rmask[j, :len(r)] = 1
    owner_t = torch.tensor(owner)
    first = _token_logprobs(last_logits[owner_t.to(device), 0], rids[:, 0].to(device)).cpu().double()
    total = first.clone()
    if width > 1:
        cache = _rows_of(cache, owner, device)
        full_mask = torch.cat([mask[owner_t], rmask], dim=1)
        start = torch.tensor([len(plans[i].prefix) for i in owner]).unsqueeze(1)
        rpos = start + torch.arange(width).unsqueeze(0)
        logits, _ = _forward(model, rids[:, :-1].to(device), full_mask[:, :-1].to(device),
                             rpos[:, :-1].to(device), past=cache)
        rest = _token_logprobs(logits, rids[:, 1:].to(device)).cpu().double()
        total += (rest * rmask[:, 1:]).sum(-1)
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
    kv: list | None = field(default=None, repr=False)  # per layer (keys, values) of ``tokens`` (see _Continuations)


class _Continuations:
    """Next-token distributions for token paths after any of several prompts, many paths in one forward.

    The prompts' KV cache (one left-padded :func:`prompts_pass`) is never modified: each call runs the given
    paths as the rows of one batch on a copy of it, each row on its own prompt's cache rows (left-padded inside
    the continuation, with explicit positions, so that every row's last token is the last column).
    :meth:`extend` feeds each path's last token on its parent's KV; :meth:`next_logps` reruns whole paths (a
    cache without per-layer tensors, or a node's window of children recomputed).
    """

    def __init__(self, model, prompts_ids: Sequence[Sequence[int]], pad_id: int = 0, prompt_state=None):
        self.model = model
        self.device = next(model.parameters()).device
        self.lengths = [len(q) for q in prompts_ids]
        if prompt_state is None:
            prompt_state = prompts_pass(model, prompts_ids, pad_id)
        logits, self.cache = prompt_state[:2]
        self.mask = prompt_state[2]
        self.root_logps = torch.log_softmax(logits[:, -1].float(), -1)
        self.forward_tokens = [0] * len(prompts_ids)
        self.forwards = 0

    @torch.inference_mode()
    def next_logps(self, owners: Sequence[int], paths: Sequence[tuple[int, ...]]) -> torch.Tensor:
        """``[len(paths), V]`` log-probabilities of the token after each (non-empty) path of prompt ``owners[i]``."""
        b, width = len(paths), max(len(p) for p in paths)
        ids = torch.zeros((b, width), dtype=torch.long)
        tail = torch.ones((b, width), dtype=torch.long)
        pos = torch.zeros((b, width), dtype=torch.long)
        for i, (owner, path) in enumerate(zip(owners, paths)):
            pad = width - len(path)
            ids[i, pad:] = torch.tensor(path)
            tail[i, :pad] = 0
            pos[i] = self.lengths[owner]
            pos[i, pad:] += torch.arange(len(path))
            self.forward_tokens[owner] += len(path)
        rows = torch.tensor(list(owners))
        cache = _rows_of(self.cache, list(owners), self.device)
        mask = torch.cat([self.mask[rows], tail], dim=1)
        logits, _ = _forward(self.model, ids.to(self.device), mask.to(self.device), pos.to(self.device), past=cache,
                             keep_last_only=True)
        self.forwards += 1
        return torch.log_softmax(logits[:, -1].float(), -1)

    @property
    def incremental(self) -> bool:
        """Whether :meth:`extend` can reuse each parent's KV (a cache that keeps tensors per layer, transformers 5)."""
        return _per_layer_tensors(self.cache)

    @torch.inference_mode()
    def extend(self, owners: Sequence[int], paths: Sequence[tuple[int, ...]], kvs: Sequence[list | None]):
        """:meth:`next_logps`, feeding each path's last token only: ``kvs[i]`` is the KV of ``paths[i][:-1]`` (its
        parent's, None for a one-token path). Returns the log-probabilities and each path's own KV (per layer
        ``(keys, values)`` of its tokens, for its children). Rows sit on their prompt's cache rows, then their
        parents' KV right-aligned (left padding masked), then the new token."""
        b, lens = len(paths), [len(p) - 1 for p in paths]
        width = max(lens)
        cache = _rows_of(self.cache, list(owners), self.device)
        for j, layer in enumerate(cache.layers if width else []):
            for name in ("keys", "values"):
                prompt = getattr(layer, name)
                tail = prompt.new_zeros(b, prompt.shape[1], width, prompt.shape[3])
                for i, kv in enumerate(kvs):
                    if lens[i]:
                        tail[i, :, width - lens[i]:] = kv[j][name == "values"][0]
                setattr(layer, name, torch.cat([prompt, tail], dim=2))
        tail_mask = torch.zeros((b, width + 1), dtype=torch.long)
        for i, n in enumerate(lens):
            tail_mask[i, width - n:] = 1
            self.forward_tokens[owners[i]] += 1
        mask = torch.cat([self.mask[torch.tensor(list(owners))], tail_mask], dim=1)
        ids = torch.tensor([[p[-1]] for p in paths])
        pos = torch.tensor([[self.lengths[o] + n] for o, n in zip(owners, lens)])
        logits, out = _forward(self.model, ids.to(self.device), mask.to(self.device), pos.to(self.device), past=cache,
                               keep_last_only=True)
        self.forwards += 1
        own = [[(layer.keys[i:i + 1, :, -(n + 1):].clone(), layer.values[i:i + 1, :, -(n + 1):].clone())
                for layer in out.layers] for i, n in enumerate(lens)]
        return torch.log_softmax(logits[:, -1].float(), -1), own


def _rows_of(cache, rows: Sequence[int], device):
    """A new cache holding ``rows`` of ``cache`` (repeats allowed), which stays as it is. Where the cache keeps
    its tensors per layer (transformers 5), the layers are copied shallowly and hold the selected rows: views
    when every row is the same prompt's (nothing copied until the forward appends), one copy of the rows
    otherwise; else the whole cache is copied, then selected."""
    if not _per_layer_tensors(cache):
        new = copy.deepcopy(cache)
        new.batch_select_indices(torch.tensor(list(rows), device=device))
        return new
    new = copy.copy(cache)
    new.layers = [copy.copy(layer) for layer in cache.layers]
    for layer in new.layers:
        for name in ("keys", "values"):
            t = getattr(layer, name)
            setattr(layer, name, t[rows[0]:rows[0] + 1].expand(len(rows), -1, -1, -1) if len(set(rows)) == 1
                    else t[torch.tensor(list(rows), device=t.device)])
    return new


def _per_layer_tensors(cache) -> bool:
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(hasattr(x, "keys") and hasattr(x, "values") for x in layers)


SEARCH_BATCH = 8  # frontier nodes a search expands per forward (1: one node at a time). Measured 2026-12-07: Fig. 6
# end to end on numeric6 (8 prompts searched together), 2 -> 22-25 s, 3-8 -> 19-22 s (within noise); the bench's
# median prompt (760 tokens, 50k vocabulary, 128 expansions either way): 4 -> 1.0-1.1 s, 8 -> 0.6-0.8 s on 2 threads,
# 1.2-1.4 s and 0.9-1.0 s on 1 (a wider batch uses the cores; beyond it, wasted expansions grow)
FORWARD_ROWS = 32  # searches of several prompts share a forward: each gets min(SEARCH_BATCH, FORWARD_ROWS // prompts)
# nodes (Fig. 6, 8 prompts at a time: 4 each -> 26-28 s end to end, 8 each -> 30-35 s)


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
        self.one_logp = one_logp  # path -> its next-token log-probabilities (a window recomputed: rare)
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
            w = self._window(node.tokens, node.logp, self.one_logp(node.tokens), rank)  # the next window, recomputed
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
        as ``(path, log-probability, its parent's KV)``."""
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
                pending.append((path, -neg, parent.kv))
        return pending

    def give(self, pending: list[tuple], logps: torch.Tensor, kvs: list | None = None) -> None:
        for j, ((path, logp, _), lp) in enumerate(zip(pending, logps)):
            node = self._window(path, logp, lp)
            node.kv = kvs[j] if kvs is not None else None
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
    steps = _Continuations(model, prompts_ids, pad_id, prompt_state)
    incremental = steps.incremental
    searches = [_Search(OutputReader(tokenizer, ids, stop, eos_ids), steps.root_logps[i], k, max_tokens, max_expansions,
                        batch, lambda path, i=i: steps.next_logps([i], [path])[0] if path else steps.root_logps[i])
                for i, ids in enumerate(prompts_ids)]
    while True:
        wanted = [(i, s.want()) for i, s in enumerate(searches) if not s.done]
        wanted = [(i, pending) for i, pending in wanted if pending]
        if not wanted:
            break
        owners = [i for i, pending in wanted for _ in pending]
        paths = [path for _, pending in wanted for path, _, _ in pending]
        if incremental:  # feed each node's last token on its parent's KV
            logps, kvs = steps.extend(owners, paths, [kv for _, pending in wanted for _, _, kv in pending])
        else:  # rerun every path whole
            logps, kvs = steps.next_logps(owners, paths), None
        start = 0
        for i, pending in wanted:
            searches[i].give(pending, logps[start:start + len(pending)], kvs and kvs[start:start + len(pending)])
            start += len(pending)
    return [SearchResult(s.certified()[:k], steps.forward_tokens[i], s.expansions, s.duplicates, len(prompts_ids[i]),
                         exhausted=s.exhausted, forwards=steps.forwards) for i, s in enumerate(searches)]
