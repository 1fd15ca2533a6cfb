"""Layer selection (paper App. C, steps 3-4): patched lone-query accuracy per layer; ℓ* = its argmax.

A query is answered correctly when its answer is the model's most likely complete output (ended by
the delimiter). Two measures (``measure``; the config key and CLI option ``accuracy``):

- ``exact`` (default): the exact top-1 of :meth:`LanguageModel.top_outputs` (k=1), found cheaply.
  Queries are decoded greedily, a batch at a time. Any other complete output leaves the greedy path
  at some step, through a prefix at most as probable as (the greedy prefix) x (the step's second
  most probable token); when every such bound is below the probability of the whole greedy output,
  that output is certainly the top-1. The other queries of the batch are searched best-first
  together (one batched forward per round, each query expanding its most probable open path),
  keeping only paths more probable than the greedy output, which bounds the top-1 from below; each
  query may expand at most ``max_nodes`` paths (a flat distribution, which a patched lone query
  often gives, can need thousands). A query that hits that bound is *undecided*: its greedy output
  is used and counted (``undecided``).
- ``greedy``: the greedy-decoded output (Hendel et al.'s measure).
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from tasksup.errors import TasksupError
from tasksup.scoring import OutputReader, _forward, _token_logprobs, best_first_outputs
from tasksup.vectors.extract import padded_batch
from tasksup.vectors.hooks import Patch, decoder_layers, patching

MEASURES = ("exact", "greedy")
MAX_NODES = 256  # expansions of one exact search before the query is undecided
LONE_BATCH = 64  # lone queries decoded together (a few tokens each)
TIE_MARGIN = 1e-4  # log-probability margin of a greedy certificate (batched and unbatched passes differ by noise)


def output_budget(lm, answers: Sequence[str], stop: str) -> int:
    """Tokens an output may take: twice the longest answer (with its stop string)."""
    return 2 * max(len(lm.encode_bare(a + stop)) for a in answers)


class _PromptBatch:
    """A batch of prompts after one (patched) prompt pass, left-padded so that each ends at column -1,
    and a KV cache that decoding extends and :meth:`feed` cuts back to the prompts."""

    def __init__(self, lm, prompts: Sequence[str], stop: str, max_tokens: int):
        ids = [lm.encode(p) for p in prompts]
        for row in ids:
            lm._check_length(len(row) + max_tokens)
        batch = padded_batch(lm, prompts)
        logits, self.cache = _forward(lm.model, batch["input_ids"], batch["attention_mask"], batch["position_ids"],
                                      keep_last_only=True)
        self.lm, self.mask, self.ids = lm, batch["attention_mask"], ids
        self.readers = [OutputReader(lm.tokenizer, row, stop, lm.eos_ids) for row in ids]
        self.first = torch.log_softmax(logits[:, -1].double(), -1).cpu()  # of the first output token [n, V]

    def _cut(self, length: int) -> None:
        """Cut the cache back to ``length`` tokens."""
        drop = self.cache.get_seq_length() - length
        if drop:
            self.cache.crop(-drop)

    def keep(self, rows: Sequence[int]) -> None:
        """Keep only these rows (in this order)."""
        self._cut(self.mask.shape[1])
        self.cache.batch_select_indices(torch.tensor(rows, device=self.mask.device))
        self.mask, self.readers, self.first = self.mask[rows], [self.readers[i] for i in rows], self.first[rows]
        self.ids = [self.ids[i] for i in rows]

    def _run(self, paths: Sequence[Sequence[int]], offset: int, last_only: bool) -> torch.Tensor:
        """Logits after each row's path; ``offset`` tokens of every path are already in the cache (greedy
        decoding feeds one token a step), any others are cut off. The rest of each path is right-aligned
        (padding between prompt and path), so that column -1 is every row's last token."""
        self._cut(self.mask.shape[1] + offset)
        width = max(len(p) for p in paths) - offset
        ids = torch.full((len(paths), width), self.lm.pad_id, dtype=torch.long)
        new = torch.ones((len(paths), offset + width), dtype=torch.long)
        pos = self.mask.sum(1, keepdim=True).cpu() + offset + torch.arange(width).expand(len(paths), -1).clone()
        for j, p in enumerate(paths):
            pad = width - (len(p) - offset)
            ids[j, pad:] = torch.tensor(p[offset:], dtype=torch.long)
            new[j, offset:offset + pad] = 0
            pos[j] -= pad
        device = self.mask.device
        logits, self.cache = _forward(self.lm.model, ids.to(device), torch.cat([self.mask, new.to(device)], 1),
                                      pos.clamp(min=0).to(device), past=self.cache, keep_last_only=last_only)
        return logits

    def feed(self, paths: Sequence[Sequence[int]], offset: int = 0) -> torch.Tensor:
        """log P(next token | prompt + path) for every row's path: float64 [n, V] (see :meth:`_run`)."""
        return torch.log_softmax(self._run(paths, offset, last_only=True)[:, -1].double(), -1).cpu()

    def path_logprobs(self, paths: Sequence[Sequence[int]]) -> list[float]:
        """log P(path | prompt) for every row's non-empty path."""
        logits = self._run(paths, 0, last_only=False)
        return [float(self.first[j, p[0]]) + float(_token_logprobs(logits[j, logits.shape[1] - len(p):-1],
                                                                   torch.tensor(p[1:], device=logits.device)).sum())
                for j, p in enumerate(paths)]


def _greedy(batch: _PromptBatch, max_tokens: int) -> list[tuple[str | None, float, float]]:
    """Per prompt: the greedy output (None: not complete within ``max_tokens``), its log-probability,
    and the best bound on a path leaving it (see the module docstring)."""
    n = len(batch.readers)
    paths: list[list[int]] = [[] for _ in range(n)]
    texts: list[str | None] = [None] * n
    live = torch.ones(n, dtype=torch.bool)
    logp = torch.zeros(n, dtype=torch.float64)
    rival = torch.full((n,), -np.inf, dtype=torch.float64)
    lp = batch.first
    for step in range(max_tokens):
        top = lp.topk(2, dim=-1)
        rival = torch.where(live, torch.maximum(rival, logp + top.values[:, 1]), rival)
        logp = torch.where(live, logp + top.values[:, 0], logp)
        for i in range(n):  # finished rows go on decoding in the batch; their tokens are not read
            paths[i].append(int(top.indices[i, 0]))
            if live[i]:
                texts[i] = batch.readers[i].complete(paths[i])
                live[i] = texts[i] is None
        if not live.any() or step + 1 == max_tokens:
            break
        lp = batch.feed(paths, offset=step)
    return list(zip(texts, logp.tolist(), rival.tolist()))


def _search(batch: _PromptBatch, floors: list[float], max_tokens: int, max_nodes: int) -> list[str | None]:
    """Best-first search of every row together, keeping the paths whose log-probability is above the
    row's floor: each row's most probable complete output (None: undecided after ``max_nodes``)."""
    counter = itertools.count()
    heaps: list[list] = [[] for _ in floors]

    def push(i: int, path: tuple[int, ...], logp: torch.Tensor) -> None:
        for t in (logp > floors[i]).nonzero().flatten().tolist():
            heapq.heappush(heaps[i], (-float(logp[t]), next(counter), path + (t,)))

    for i in range(len(floors)):
        push(i, (), batch.first[i])
    found: list[str | None] = [None] * len(floors)
    nodes = [0] * len(floors)
    while True:
        expand: dict[int, tuple[tuple[int, ...], float]] = {}
        for i, heap in enumerate(heaps):
            while heap:
                neg, _, path = heapq.heappop(heap)
                found[i] = batch.readers[i].complete(path)
                if found[i] is not None or (len(path) < max_tokens and nodes[i] == max_nodes):
                    heap.clear()  # decided, or undecided (None)
                elif len(path) < max_tokens:
                    expand[i] = (path, -neg)
                    break
        if not expand:
            return found
        lp = batch.feed([expand[i][0] if i in expand else [batch.lm.pad_id] for i in range(len(floors))])
        for i, (path, logp) in expand.items():
            nodes[i] += 1
            push(i, path, logp + lp[i])


def _answer_path(lm, reader: OutputReader, head: list[int], query: str, answer: str, stop: str,
                 max_tokens: int) -> list[int] | None:
    """The answer's own tokens after the query, when they form a complete output the search could
    return (complete at the end and not before, within ``max_tokens``); else None."""
    full = lm.encode(query + answer + stop)  # head: the query's own tokens, encoded once by the batch
    path = full[len(head):]
    if full[:len(head)] != head or not 0 < len(path) <= max_tokens:
        return None
    ends = [reader.complete(path[:j]) is not None for j in range(1, len(path) + 1)]
    return path if ends[-1] and not any(ends[:-1]) else None


def _exact(batch: _PromptBatch, queries: Sequence[tuple[str, str]], greedy: list, stop: str, max_tokens: int,
           max_nodes: int) -> tuple[dict[int, str | None], int]:
    """The exact top-1 of the rows whose greedy output is not certified: ``({row: output}, undecided)``.

    Searched paths must beat the greedy output or the answer's own path, whichever is more probable
    (both complete outputs, so the top-1 is at least as probable); with neither, the plain search."""
    lm = batch.lm
    rows = [i for i, (text, logp, rival) in enumerate(greedy) if text is None or rival >= logp - TIE_MARGIN]
    floors = {i: greedy[i][1] if greedy[i][0] is not None else -np.inf for i in rows}
    answers = {i: _answer_path(lm, batch.readers[i], batch.ids[i], *queries[i], stop, max_tokens) for i in rows}
    if any(answers.values()):
        logps = batch.path_logprobs([answers.get(i) or [lm.pad_id] for i in range(len(greedy))])
        floors.update({i: max(floors[i], logps[i]) for i in rows if answers[i]})
    found, undecided = {}, 0
    for i in [i for i in rows if floors[i] == -np.inf]:
        result = best_first_outputs(lm.model, lm.tokenizer, batch.ids[i], 1, stop, max_tokens,
                                    lm.eos_ids, max_expansions=max_nodes)
        undecided += result.exhausted
        found[i] = result.outputs[0][0] if result.outputs else None
    rows = [i for i in rows if floors[i] > -np.inf]
    if rows:
        batch.keep(rows)
        for i, text in zip(rows, _search(batch, [floors[i] - TIE_MARGIN for i in rows], max_tokens, max_nodes)):
            undecided += text is None
            found[i] = greedy[i][0] if text is None else text
    return found, undecided


@dataclass
class Outputs:
    """The most likely output of each query under one measure ("" when none completes)."""

    texts: list[str]
    undecided: int = 0  # exact: queries whose search hit max_nodes (their greedy output is used)


def top1_outputs(lm, queries: Sequence[tuple[str, str]], patches: Sequence[Patch] = (), stop: str = "\n",
                 max_tokens: int | None = None, measure: str = "exact", max_nodes: int = MAX_NODES,
                 batch_size: int | None = None) -> Outputs:
    """Each query's most likely complete output, with ``patches`` applied, under ``measure``.

    Batches of ``batch_size`` queries (default ``lm.batch_size``); a patch at position -1 hits every
    query's last token in the prompt pass, and the outputs are read from its cache.
    """
    if measure not in MEASURES:
        raise TasksupError(f"accuracy must be one of {', '.join(MEASURES)}, got {measure!r}")
    budget = max_tokens or output_budget(lm, [a for _, a in queries], stop)
    texts, undecided = [], 0
    with patching(lm.model, patches), torch.inference_mode():
        bs = batch_size or lm.batch_size
        for start in range(0, len(queries), bs):
            chunk = [q for q, _ in queries[start:start + bs]]
            batch = _PromptBatch(lm, chunk, stop, budget)
            greedy = _greedy(batch, budget)
            outputs = [text for text, _, _ in greedy]
            if measure == "exact":
                searched, n_undecided = _exact(batch, queries[start:start + bs], greedy, stop, budget, max_nodes)
                outputs = [searched.get(i, text) for i, text in enumerate(outputs)]
                undecided += n_undecided
            texts += [text or "" for text in outputs]
    return Outputs(texts, undecided)


def accuracy(outputs: Outputs, queries: Sequence[tuple[str, str]]) -> float:
    return float(np.mean([o == a for o, (_, a) in zip(outputs.texts, queries)]))


@dataclass
class LayerCurve:
    """Patched lone-query accuracy for every layer (and what the model said), plus the unpatched baseline."""

    accuracy: list[float | None]  # None: a layer that was not tried
    outputs: list[list[str]]
    baseline: float
    undecided: int = 0  # exact: queries (over every layer and the baseline) decided by their greedy output

    @property
    def best_layer(self) -> int:
        tried = [(a, -i) for i, a in enumerate(self.accuracy) if a is not None]
        return -max(tried)[1]  # the first layer among ties

    def to_json(self) -> dict:
        return {"layer_accuracy": self.accuracy, "best_layer": self.best_layer, "baseline_accuracy": self.baseline,
                "undecided": self.undecided}


def layer_curve(lm, vectors: torch.Tensor, queries: Sequence[tuple[str, str]], *, mode: str = "replace",
                stop: str = "\n", layers: Sequence[int] | None = None, max_tokens: int | None = None,
                measure: str = "exact", max_nodes: int = MAX_NODES, progress: bool = False) -> LayerCurve:
    """Accuracy of the lone queries with ``vectors[ℓ]`` patched at their last token, layer by layer.

    ``vectors``: [n_layers, d] (a task vector per layer) or [d] (one vector tried at every layer,
    e.g. a function vector). Layers not in ``layers`` get accuracy None. ``max_tokens``: the longest
    output (default :func:`output_budget`); ``measure``, ``max_nodes``: see :func:`top1_outputs`.
    """
    n = len(decoder_layers(lm.model))
    if vectors.ndim == 1:
        vectors = vectors.expand(n, -1)
    if vectors.shape[0] != n:
        raise TasksupError(f"{vectors.shape[0]} layer vectors for a model with {n} decoder layers")
    budget = max_tokens or output_budget(lm, [a for _, a in queries], stop)
    todo = list(range(n)) if layers is None else list(layers)
    acc: list[float | None] = [None] * n
    outs: list[list[str]] = [[] for _ in range(n)]
    undecided = 0
    for layer in tqdm(todo, desc="layers", disable=not progress, leave=False):
        found = top1_outputs(lm, queries, [Patch(layer, vectors[layer], mode)], stop, budget, measure, max_nodes,
                             LONE_BATCH)
        outs[layer], acc[layer] = found.texts, accuracy(found, queries)
        undecided += found.undecided
    found = top1_outputs(lm, queries, (), stop, budget, measure, max_nodes, LONE_BATCH)
    return LayerCurve(acc, outs, accuracy(found, queries), undecided + found.undecided)
