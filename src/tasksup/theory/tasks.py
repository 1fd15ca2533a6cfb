"""Task specifications for the construction (Appendix D.2).

A task ``g`` reads one token of an example, ``x_i`` with ``i`` in ``1..n-2`` (the paper's "for some
fixed l that is task-specific"), and maps it to a label in the same ``d``-dimensional token space.
The transformer never evaluates ``g`` itself: its first MLP evaluates a sum of ReLUs ``g~``
(Definition 1), applied coordinate by coordinate, so every task exposes that ReLU sum. Labels in
prompts are made with the true ``g``; the gap ``|g~ - g|`` is the approximation error ``epsilon`` of
Lemma 2.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import numpy as np


@dataclass(frozen=True, eq=False)
class ReluSum:
    """Definition 1 for a scalar input: ``f(x) = sum_m c_m ReLU(a_m . [x, 1])`` with ``|a_m|_1 <= 1``."""

    a: np.ndarray  # (M, 2): coefficient of x and of the constant 1
    c: np.ndarray  # (M,)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        hidden = np.maximum(np.multiply.outer(x, self.a[:, 0]) + self.a[:, 1], 0.0)
        return hidden @ self.c

    @property
    def num_relus(self) -> int:
        """M in Definition 1."""
        return len(self.c)

    @property
    def coefficient_sum(self) -> float:
        """C in Definition 1 (sum of |c_m|)."""
        return float(np.abs(self.c).sum())


class Task(ABC):
    """A task ``g``: token ``x_i`` of an example -> label ``y`` (both ``dim``-dimensional)."""

    position: int
    dim: int

    @property
    @abstractmethod
    def name(self) -> str: ...

    @property
    @abstractmethod
    def relu_sum(self) -> ReluSum:
        """The sum of ReLUs the transformer applies to every coordinate (Definition 1)."""

    @abstractmethod
    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The true task on tokens of shape (..., dim)."""

    @property
    def key(self) -> tuple[str, int]:
        """Two tasks with the same key are the same function and cannot be told apart."""
        return (self.name, self.position)

    @property
    def label(self) -> str:
        return f"{self.name}@{self.position}"

    def approx(self, x: np.ndarray) -> np.ndarray:
        """``g~``: what the construction computes, the ReLU sum applied coordinatewise."""
        return self.relu_sum(np.asarray(x, dtype=np.float64))

    @cached_property
    def approx_error(self) -> float:
        """Sup-norm error ``epsilon`` of ``g~`` on ``[-1, 1]`` per coordinate, on a 20001-point grid."""
        grid = np.linspace(-1.0, 1.0, 20001)
        true = self(np.repeat(grid[:, None], self.dim, axis=1))[:, 0]
        return float(np.max(np.abs(self.relu_sum(grid) - true)))


@dataclass(frozen=True, eq=False)
class CopyTask(Task):
    """Copy the ``position``-th token: ``g(x) = x`` (Appendix D.2, "Copy Tasks").

    The identity is an exact sum of two ReLUs, ``x = ReLU(x) - ReLU(-x)``, so ``epsilon = 0``.
    """

    position: int
    dim: int

    @property
    def name(self) -> str:
        return "copy"

    @cached_property
    def relu_sum(self) -> ReluSum:
        return ReluSum(a=np.array([[1.0, 0.0], [-1.0, 0.0]]), c=np.array([1.0, -1.0]))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.array(x, dtype=np.float64, copy=True)


@dataclass(frozen=True, eq=False)
class SmoothTask(Task):
    """A smooth scalar function applied to every coordinate of the ``position``-th token.

    ``g~`` is the piecewise-linear interpolant of ``fn`` on ``knots`` equal pieces of ``[-1, 1]``,
    written in Definition 1's normalised form: ``ReLU(x - t) = (1 + |t|) ReLU((x - t) / (1 + |t|))``
    keeps ``|a_m|_1 <= 1`` and the constant ``fn(-1)`` is ``fn(-1) ReLU(1)``. It is flat outside
    ``[-1, 1]`` so that tokens the task never reads (labels, '=') give bounded garbage. The error
    is ``O(h^2 max|fn''|)`` with ``h = 2 / knots`` (Proposition 1 only asserts existence; this is one
    explicit (epsilon, 1, M, C)-approximation).
    """

    position: int
    dim: int
    fn_name: str
    knots: int = 256

    def __post_init__(self) -> None:
        if self.fn_name not in SMOOTH_FUNCTIONS:
            raise ValueError(f"unknown smooth function {self.fn_name!r} (known: {', '.join(SMOOTH_FUNCTIONS)})")
        if self.knots < 1:
            raise ValueError(f"knots must be >= 1, got {self.knots}")

    @property
    def name(self) -> str:
        return self.fn_name

    @property
    def fn(self) -> Callable[[np.ndarray], np.ndarray]:
        return SMOOTH_FUNCTIONS[self.fn_name]

    @cached_property
    def relu_sum(self) -> ReluSum:
        t = np.linspace(-1.0, 1.0, self.knots + 1)
        v = self.fn(t)
        slopes = np.diff(v) / np.diff(t)
        kinks = np.diff(np.concatenate([[0.0], slopes, [0.0]]))  # slope change at every knot
        scale = 1.0 + np.abs(t)
        a = np.stack([1.0 / scale, -t / scale], axis=1)
        c = kinks * scale
        a = np.concatenate([[[0.0, 1.0]], a])
        c = np.concatenate([[v[0]], c])
        return ReluSum(a=a, c=c)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.fn(np.asarray(x, dtype=np.float64))


SMOOTH_FUNCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sin": lambda x: np.sin(math.pi * x),
    "cos": lambda x: np.cos(math.pi * x),
    "square": lambda x: x * x,
    "tanh": lambda x: np.tanh(3.0 * x),
    "gauss": lambda x: np.exp(-4.0 * x * x),
}


def random_tasks(num_tasks: int, d: int, n: int, rng: np.random.Generator) -> list[Task]:
    """``num_tasks`` distinct tasks drawn uniformly from {copy, smooth functions} x positions 1..n-2."""
    if num_tasks < 1:
        raise ValueError(f"the number of tasks K must be >= 1, got {num_tasks}")
    if n < 3:
        raise ValueError(f"example length n must be >= 3 (x_1, '=', y), got {n}")
    kinds = ["copy", *SMOOTH_FUNCTIONS]
    candidates = [(kind, i) for i in range(1, n - 1) for kind in kinds]
    if num_tasks > len(candidates):
        raise ValueError(f"only {len(candidates)} distinct tasks exist for n={n}, asked for {num_tasks}")
    picks = rng.choice(len(candidates), size=num_tasks, replace=False)
    tasks: list[Task] = []
    for idx in picks:
        kind, i = candidates[int(idx)]
        tasks.append(CopyTask(position=i, dim=d) if kind == "copy" else SmoothTask(position=i, dim=d, fn_name=kind))
    return tasks
