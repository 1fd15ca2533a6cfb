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
        return ScoringPlan(p, tails, list(range(len(answers))), None, merge, differs)
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
    return ScoringPlan(p[:c], rows, answer_rows, remainder, merge, differs)


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


@torch.inference_mode()
def prompt_pass(model, prompt_ids: Sequence[int]):
    """One unpadded forward over a prompt: ``(logits of its last position [1, 1, V], KV cache)``.

    Both :func:`run_plans` (``prefix_state``) and :func:`best_first_outputs` (``prompt_state``) can
    start from it, so scoring a prompt's answers and searching its top-k need one prompt pass. The
    cache is modified in place by whatever continues it: give each user its own copy.
    """
    device = next(model.parameters()).device
    ids = torch.tensor([list(prompt_ids)], device=device)
    return _forward(model, ids, torch.ones_like(ids), torch.arange(ids.shape[1], device=device)[None],
                    keep_last_only=True)


@torch.inference_mode()
def run_plans(model, plans: Sequence[ScoringPlan], pad_id: int, prefix_state=None) -> list[np.ndarray]:
    """Answer log-probabilities (float64 arrays, one per plan) for a batch of plans.

    ``prefix_state``: for a single plan, :func:`prompt_pass` over exactly its ``prefix`` (consumed),
    instead of running the prefix here.
    """
    device = next(model.parameters()).device
    if prefix_state is not None and len(plans) != 1:
        raise ValueError("prefix_state serves a single plan")
    b = len(plans)
    cmax = max(len(p.prefix) for p in plans)
    ids = torch.full((b, cmax), pad_id, dtype=torch.long)
    mask = torch.zeros((b, cmax), dtype=torch.long)
    for i, p in enumerate(plans):  # left padding: every prefix ends at column cmax - 1
        ids[i, cmax - len(p.prefix):] = torch.tensor(p.prefix)
        mask[i, cmax - len(p.prefix):] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    if prefix_state is None:
        last_logits, cache = _forward(model, ids.to(device), mask.to(device), pos.to(device), keep_last_only=True)
    else:
        last_logits, cache = prefix_state

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
        cache.batch_select_indices(owner_t.to(device))
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


CHILD_CHUNK = 64  # children an expanded node keeps, best first; further ones are recomputed on demand


@dataclass
class _Node:
    """A search node and a window of its children: ranks first_rank .. first_rank + len(sorted_ids) - 1."""

    tokens: tuple[int, ...]
    logp: float
    sorted_logp: np.ndarray = field(repr=False)
    sorted_ids: np.ndarray = field(repr=False)
    first_rank: int = 0


class _CachedStepper:
    """Next-token distributions for token paths after a fixed prompt, reusing one KV cache.

    The cache holds the prompt plus the path last run; a new path rewinds it to the common prefix
    and feeds only the tokens that differ (usually one: best-first mostly extends the last path).
    """

    def __init__(self, model, prompt_ids: list[int], prompt_state=None):
        self.model = model
        self.device = next(model.parameters()).device
        self.n_prompt = len(prompt_ids)
        logits, self.cache = prompt_state if prompt_state is not None else prompt_pass(model, prompt_ids)
        self.root_logp = torch.log_softmax(logits[0, -1].float(), -1)
        self.path: tuple[int, ...] = ()
        self.forward_tokens = 0

    @torch.inference_mode()
    def next_logp(self, path: tuple[int, ...]) -> torch.Tensor:
        if not path:
            return self.root_logp
        keep = min(common_prefix_len(self.path, path), len(path) - 1)
        drop = len(self.path) - keep
        if drop:
            self.cache.crop(-drop)
        new = torch.tensor([path[keep:]], device=self.device)
        start = self.n_prompt + keep
        total = start + new.shape[1]
        logits, self.cache = _forward(self.model, new, torch.ones((1, total), dtype=torch.long, device=self.device),
                                      torch.arange(start, total, device=self.device)[None], past=self.cache,
                                      keep_last_only=True)
        self.path = path
        self.forward_tokens += new.shape[1]
        return torch.log_softmax(logits[0, -1].float(), -1)


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


@torch.inference_mode()
def best_first_outputs(model, tokenizer, prompt_ids: list[int], k: int, stop: str | None, max_tokens: int,
                       eos_ids: set[int], prompt_state=None, max_expansions: int | None = None) -> SearchResult:
    """The exact k most probable complete outputs, by best-first (uniform-cost) search.

    A token path is *complete* when its decoded text contains ``stop`` (the output is the text
    before it) or when it ends with an EOS token. Probabilities only shrink as a path grows, so
    popping paths in order of probability yields complete outputs in order of probability: the
    result is exact, not a beam approximation. Each expanded node keeps its best ``CHILD_CHUNK``
    children sorted (the next ones are recomputed if ever needed) and only its best not-yet-popped
    child sits in the heap (lazy sibling push), so heap and memory stay small even when a flat
    distribution makes the search expand thousands of nodes.

    Different token paths can decode to the same string (another tokenization of "174", or "\\n"
    versus "\\n\\n" as the terminator). Outputs are distinct strings: a string's probability is that
    of its most probable token path (found first); later paths to the same string are counted in
    ``duplicates`` and not added. This equals ``answer_probs(..., terminator=stop)``, which scores
    the single canonical tokenization, whenever that tokenization is the most probable path (the
    usual case); otherwise it is larger (e.g. "is" + "\\n\\n" beating "is" + "\\n").

    ``max_expansions`` bounds the work (a flat distribution can need thousands of expansions): the
    search then stops with ``exhausted=True`` and the outputs found so far, which are still the
    most probable ones, in order, but may be fewer than k.
    """
    if k < 1 or max_tokens < 1:
        raise TasksupError("top_outputs needs k >= 1 and max_tokens >= 1")
    if stop is None and not eos_ids:
        raise TasksupError("top_outputs needs a stop string or a tokenizer with an EOS token")
    stepper = _CachedStepper(model, prompt_ids, prompt_state)
    reader = OutputReader(tokenizer, prompt_ids, stop, eos_ids)

    def expand(path: tuple[int, ...], logp: float, first_rank: int = 0) -> _Node:
        # Only a window of CHILD_CHUNK children is kept (memory per node O(chunk), not O(vocab): a flat
        # distribution can need thousands of expansions); lazy sibling pushes rarely reach its end.
        lp = stepper.next_logp(path)
        vals, idx = torch.topk(lp, min(first_rank + CHILD_CHUNK, lp.shape[-1]))
        return _Node(path, logp, vals[first_rank:].cpu().numpy().astype(np.float64), idx[first_rank:].cpu().numpy(),
                     first_rank)

    counter = itertools.count()
    heap: list = []

    def push_child(node: _Node, rank: int) -> None:
        if rank == node.first_rank + len(node.sorted_ids) and len(node.sorted_ids) == CHILD_CHUNK:
            window = expand(node.tokens, node.logp, rank)  # the next window of children, recomputed
            node.sorted_logp, node.sorted_ids, node.first_rank = window.sorted_logp, window.sorted_ids, rank
        i = rank - node.first_rank
        if i < len(node.sorted_ids) and np.isfinite(node.sorted_logp[i]):
            heapq.heappush(heap, (-(node.logp + node.sorted_logp[i]), next(counter), node, rank))

    push_child(expand((), 0.0), 0)
    outputs: dict[str, float] = {}
    duplicates = expansions = 0
    while heap and len(outputs) < k:
        neg, _, parent, rank = heapq.heappop(heap)
        token = int(parent.sorted_ids[rank - parent.first_rank])
        push_child(parent, rank + 1)  # may move parent's window: read the token first
        path = parent.tokens + (token,)
        done_text = reader.complete(path)
        if done_text is not None:
            if done_text in outputs:
                duplicates += 1
            else:
                outputs[done_text] = float(np.exp(-neg))
        elif len(path) < max_tokens:
            if expansions == max_expansions:
                return SearchResult(list(outputs.items()), stepper.forward_tokens, expansions, duplicates,
                                    len(prompt_ids), exhausted=True)
            expansions += 1
            push_child(expand(path, -neg), 0)
    return SearchResult(list(outputs.items()), stepper.forward_tokens, expansions, duplicates, len(prompt_ids))
