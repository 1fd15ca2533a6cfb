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


def _supports_logits_to_keep(model) -> bool:
    import inspect

    return "logits_to_keep" in inspect.signature(model.forward).parameters


def _forward(model, input_ids, attention_mask, position_ids, past=None, keep_last_only=False):
    kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=True)
    if past is not None:
        kwargs["past_key_values"] = past
    if keep_last_only and _supports_logits_to_keep(model):
        kwargs["logits_to_keep"] = 1
    out = model(**kwargs)
    logits = out.logits[:, -1:] if keep_last_only else out.logits
    return logits, out.past_key_values


def _token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[targets] in float32 without materialising the full log-softmax."""
    logits = logits.float()
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


@torch.inference_mode()
def run_plans(model, plans: Sequence[ScoringPlan], pad_id: int) -> list[np.ndarray]:
    """Answer log-probabilities (float64 arrays, one per plan) for a batch of plans."""
    device = next(model.parameters()).device
    b = len(plans)
    cmax = max(len(p.prefix) for p in plans)
    ids = torch.full((b, cmax), pad_id, dtype=torch.long)
    mask = torch.zeros((b, cmax), dtype=torch.long)
    for i, p in enumerate(plans):  # left padding: every prefix ends at column cmax - 1
        ids[i, cmax - len(p.prefix):] = torch.tensor(p.prefix)
        mask[i, cmax - len(p.prefix):] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    last_logits, cache = _forward(model, ids.to(device), mask.to(device), pos.to(device), keep_last_only=True)

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


@dataclass
class _Node:
    tokens: tuple[int, ...]
    logp: float
    sorted_logp: np.ndarray = field(repr=False)
    sorted_ids: np.ndarray = field(repr=False)


class _CachedStepper:
    """Next-token distributions for token paths after a fixed prompt, reusing one KV cache.

    The cache holds the prompt plus the path last run; a new path rewinds it to the common prefix
    and feeds only the tokens that differ (usually one: best-first mostly extends the last path).
    """

    def __init__(self, model, prompt_ids: list[int]):
        self.model = model
        self.device = next(model.parameters()).device
        self.n_prompt = len(prompt_ids)
        ids = torch.tensor([prompt_ids], device=self.device)
        logits, self.cache = _forward(model, ids, torch.ones_like(ids), torch.arange(len(prompt_ids), device=self.device)[None],
                                      keep_last_only=True)
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


@torch.inference_mode()
def best_first_outputs(model, tokenizer, prompt_ids: list[int], k: int, stop: str | None, max_tokens: int,
                       eos_ids: set[int]) -> SearchResult:
    """The exact k most probable complete outputs, by best-first (uniform-cost) search.

    A token path is *complete* when its decoded text contains ``stop`` (the output is the text
    before it) or when it ends with an EOS token. Probabilities only shrink as a path grows, so
    popping paths in order of probability yields complete outputs in order of probability: the
    result is exact, not a beam approximation. Each expanded node keeps its children sorted and
    only its best not-yet-popped child sits in the heap (lazy sibling push), so the heap stays small.

    Different token paths can decode to the same string (another tokenization of "174", or "\\n"
    versus "\\n\\n" as the terminator). Outputs are distinct strings: a string's probability is that
    of its most probable token path (found first); later paths to the same string are counted in
    ``duplicates`` and not added. This matches ``answer_probs(..., terminator=stop)``, which scores
    the single canonical tokenization.
    """
    if k < 1 or max_tokens < 1:
        raise TasksupError("top_outputs needs k >= 1 and max_tokens >= 1")
    if stop is None and not eos_ids:
        raise TasksupError("top_outputs needs a stop string or a tokenizer with an EOS token")
    stepper = _CachedStepper(model, prompt_ids)
    anchor = prompt_ids[-8:]
    anchor_text = tokenizer.decode(anchor, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def text_of(path: tuple[int, ...]) -> str:
        full = tokenizer.decode(anchor + list(path), skip_special_tokens=True, clean_up_tokenization_spaces=False)
        return full[len(anchor_text):]

    def expand(path: tuple[int, ...], logp: float) -> _Node:
        lp = stepper.next_logp(path)
        vals, idx = torch.sort(lp, descending=True)
        return _Node(path, logp, vals.cpu().numpy().astype(np.float64), idx.cpu().numpy())

    counter = itertools.count()
    heap: list = []

    def push_child(node: _Node, rank: int) -> None:
        if rank < len(node.sorted_ids) and np.isfinite(node.sorted_logp[rank]):
            heapq.heappush(heap, (-(node.logp + node.sorted_logp[rank]), next(counter), node, rank))

    push_child(expand((), 0.0), 0)
    outputs: dict[str, float] = {}
    duplicates = expansions = 0
    while heap and len(outputs) < k:
        neg, _, parent, rank = heapq.heappop(heap)
        push_child(parent, rank + 1)
        token = int(parent.sorted_ids[rank])
        path = parent.tokens + (token,)
        done_text = None
        if token in eos_ids:
            done_text = text_of(parent.tokens)
        else:
            text = text_of(path)
            if stop is not None and stop in text:
                done_text = text.split(stop, 1)[0]
        if done_text is not None:
            if done_text in outputs:
                duplicates += 1
            else:
                outputs[done_text] = float(np.exp(-neg))
        elif len(path) < max_tokens:
            expansions += 1
            push_child(expand(path, -neg), 0)
    return SearchResult(list(outputs.items()), stepper.forward_tokens, expansions, duplicates, len(prompt_ids))
