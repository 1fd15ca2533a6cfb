"""Layer selection (paper App. C, step 3-4): patched lone-query accuracy per layer; ℓ* = its argmax.

A query is answered correctly when the model's most probable complete output (the exact top-1 of
:meth:`LanguageModel.top_outputs`, ended by the delimiter) equals the task's answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from tasksup.errors import TasksupError
from tasksup.vectors.hooks import Patch, decoder_layers, patching


def output_budget(lm, answers: Sequence[str], stop: str) -> int:
    """Tokens the top-1 search may spend: twice the longest answer (with its stop string)."""
    return 2 * max(len(lm.encode_bare(a + stop)) for a in answers)


def top1_outputs(lm, queries: Sequence[tuple[str, str]], patches: Sequence[Patch] = (), stop: str = "\n",
                 max_tokens: int | None = None) -> list[str]:
    """The most probable complete output of each query, with ``patches`` applied ("" when none completes)."""
    budget = max_tokens or output_budget(lm, [a for _, a in queries], stop)
    with patching(lm.model, patches):
        tops = [lm.top_outputs(q, k=1, stop=stop, max_tokens=budget) for q, _ in queries]
    return [t[0][0] if t else "" for t in tops]


def accuracy(outputs: Sequence[str], queries: Sequence[tuple[str, str]]) -> float:
    return float(np.mean([o == a for o, (_, a) in zip(outputs, queries)]))


@dataclass
class LayerCurve:
    """Patched lone-query accuracy for every layer (and what the model said), plus the unpatched baseline."""

    accuracy: list[float | None]  # None: a layer that was not tried
    outputs: list[list[str]]
    baseline: float

    @property
    def best_layer(self) -> int:
        tried = [(a, -i) for i, a in enumerate(self.accuracy) if a is not None]
        return -max(tried)[1]  # the first layer among ties

    def to_json(self) -> dict:
        return {"layer_accuracy": self.accuracy, "best_layer": self.best_layer, "baseline_accuracy": self.baseline}


def layer_curve(lm, vectors: torch.Tensor, queries: Sequence[tuple[str, str]], *, mode: str = "replace",
                stop: str = "\n", layers: Sequence[int] | None = None, max_tokens: int | None = None,
                progress: bool = False) -> LayerCurve:
    """Accuracy of the lone queries with ``vectors[ℓ]`` patched at their last token, layer by layer.

    ``vectors``: [n_layers, d] (a task vector per layer) or [d] (one vector tried at every layer,
    e.g. a function vector). Layers not in ``layers`` get accuracy None. ``max_tokens``: the search
    budget per query (default :func:`output_budget`).
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
    for layer in tqdm(todo, desc="layers", disable=not progress, leave=False):
        outs[layer] = top1_outputs(lm, queries, [Patch(layer, vectors[layer], mode)], stop, budget)
        acc[layer] = accuracy(outs[layer], queries)
    baseline = accuracy(top1_outputs(lm, queries, (), stop, budget), queries)
    return LayerCurve(acc, outs, baseline)
