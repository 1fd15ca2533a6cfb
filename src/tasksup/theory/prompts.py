"""In-context prompts ``(x_1..x_{n-2}, '=', y)`` x m plus the query, and the quantities to compare with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from tasksup.theory.layout import sequence_length
from tasksup.theory.tasks import Task


@dataclass(frozen=True, eq=False)
class Prompt:
    """``tokens`` (N, d) with zeros on '=' tokens, ``is_eq`` (N,), and which task made each example."""

    tokens: torch.Tensor
    is_eq: torch.Tensor
    example_tasks: tuple[int, ...]
    n: int

    @property
    def query(self) -> np.ndarray:
        """The query's ``x_1..x_{n-2}``, shape (n-2, d)."""
        return self.tokens[-(self.n - 1):-1].numpy()

    def example(self, j: int) -> np.ndarray:
        """Example j's ``x_1..x_{n-2}``, shape (n-2, d)."""
        return self.tokens[j * self.n: j * self.n + self.n - 2].numpy()

    def label(self, j: int) -> np.ndarray:
        return self.tokens[j * self.n + self.n - 1].numpy()


def proportions_by_counting(example_tasks: Sequence[int], num_tasks: int) -> np.ndarray:
    """``p_k``: the share of in-context examples made by task k, by plain counting."""
    counts = np.zeros(num_tasks)
    for t in example_tasks:
        counts[t] += 1
    return counts / len(example_tasks)


def superposed_output(tasks: Sequence[Task], query: np.ndarray, weights: Sequence[float], approx: bool = False) -> np.ndarray:
    """``sum_k weights_k g_k(x_query)`` with the true tasks (or their ReLU sums ``g~`` if ``approx``)."""
    out = np.zeros(query.shape[1])
    for task, w in zip(tasks, weights):
        x = query[task.position - 1]
        out += w * (task.approx(x) if approx else task(x))
    return out


def random_counts(num_tasks: int, m: int, rng: np.random.Generator) -> np.ndarray:
    """Example counts per task: proportions from a flat Dirichlet, counts multinomial (some may be 0)."""
    return rng.multinomial(m, rng.dirichlet(np.ones(num_tasks)))


def sample_prompt(tasks: Sequence[Task], m: int, n: int, rng: np.random.Generator,
                  counts: Sequence[int] | None = None, min_separation: float = 0.1,
                  max_tries: int = 1000) -> Prompt:
    """A prompt with ``counts[k]`` examples of task k in random order, tokens uniform in [-1, 1]^d.

    The construction can only count examples whose label tells the tasks apart, so every example is
    redrawn until each other task misses its label by ``>= min_separation`` in L1 (with the default
    constants an example is rejected by a wrong task once the miss exceeds ``tau + 1/c_delta = 0.02``).
    """
    if m < 1:
        raise ValueError(f"number of in-context examples m must be >= 1, got {m}")
    if not tasks:
        raise ValueError("need at least one task (K >= 1), got K = 0")
    d = tasks[0].dim
    counts = random_counts(len(tasks), m, rng) if counts is None else np.asarray(counts)
    if len(counts) != len(tasks) or counts.sum() != m or (counts < 0).any():
        raise ValueError(f"counts {list(counts)} must be {len(tasks)} non-negative numbers summing to m = {m}")
    order = rng.permutation(np.repeat(np.arange(len(tasks)), counts))
    tokens = np.zeros((sequence_length(m, n), d))
    is_eq = np.zeros(sequence_length(m, n), dtype=bool)
    for j, k in enumerate(order):
        for _ in range(max_tries):
            xs = rng.uniform(-1.0, 1.0, size=(n - 2, d))
            y = tasks[k](xs[tasks[k].position - 1])
            misses = [np.abs(t(xs[t.position - 1]) - y).sum() for i, t in enumerate(tasks) if i != k]
            if min(misses, default=np.inf) >= min_separation:
                break
        else:
            raise ValueError(f"could not draw an example that separates task {tasks[k].label} from the others "
                             f"by {min_separation} in {max_tries} tries")
        tokens[j * n: j * n + n - 2] = xs
        tokens[j * n + n - 1] = y
        is_eq[j * n + n - 2] = True
    tokens[m * n: m * n + n - 2] = rng.uniform(-1.0, 1.0, size=(n - 2, d))
    is_eq[-1] = True
    return Prompt(torch.from_numpy(tokens), torch.from_numpy(is_eq), tuple(int(k) for k in order), n)
