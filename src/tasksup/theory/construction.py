"""Explicit weights for Theorem 1: seven layers, K heads per attention layer (Appendix D).

One function per lemma writes its weights into the layers it occupies; ``build_weights`` runs them in
order and pads every attention layer to K heads (head k serves task k, D.4 eq. 39; MLPs of different
tasks act on disjoint rows, the block-diagonal weights of eq. 38). Where the stages sit:

====== ============================================== ==============================================
layer  attention (K heads)                            MLP
====== ============================================== ==============================================
1      Lemma 1: '=' flag shifted onto labels (4-5)    Lemma 2: g~_k(x_t) (7); Lemma 4 markers (30)
2      Lemma 2: g~_k(x_i) aligned with label (8-15)   Lemma 2: subtract the label (17)
3      Lemma 4: g~_k(x_i^query) to last token (30)    Lemma 3: L1 norm (19-20)
4      --                                             Lemma 3: non-label norms set to 1 (21-22)
5      --                                             Lemma 3: indicator delta^ (23-25)
6      Lemma 3: average of the indicators (26-28)     Lemma 4: weighting scores, clear rows (31-32)
7      Lemma 4: weight task outputs (33-36)           --
====== ============================================== ==============================================

Everything is float64 so that the errors measured are the construction's (softmax leakage,
ReLU approximation), not float32 rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Sequence

import numpy as np
import torch

from tasksup.theory.layout import ResidualLayout, binary_codes, position_bits, sequence_length
from tasksup.theory.tasks import Task

NUM_LAYERS = 7
VARIANTS = ("exact", "sigmoid")


@dataclass(frozen=True)
class Constants:
    """The large constants "C" of the appendix; each bounds one error term (docs/theory.md).

    c_pos:   eq. 9, scale of ``p_t . p_u`` in the three shift heads. A wrong token scores at least
             ``2 c_pos`` below the right one, so leakage is ``<= (bits + N e^{-2 c_pos}) e^{-2 c_pos}``.
    c_avg:   eq. 26, label-selecting score of the averaging head; non-label tokens leak
             ``<= (N - m) e^{-c_avg} / m`` into the proportions.
    c_delta: eq. 24, slope of the indicator; a task is rejected when ``|g~ - y|_1 >= tau + 1/c_delta``.
    tau:     dead zone of the indicator: accepted when ``|g~ - y|_1 <= tau`` (``tau = 0`` is eq. 24
             verbatim, whose indicator is ``1 - c_delta |g~ - y|_1``, i.e. below 1 for smooth tasks).
    c_out:   eq. 31, score ``-C`` of the tokens the weighting heads must ignore (leakage
             ``<= N e^{-c_out}``), and the clamp of the exact variant's logit at ``p = 0, 1``.
    c_big:   eq. 21's ``C`` and the bound of eq. 32's gate: must exceed every ``|g~ - y|_1`` at labels
             and every ``|g~|`` (a validity bound, not an accuracy knob).
    """

    c_pos: float = 15.0
    c_avg: float = 30.0
    c_delta: float = 100.0
    tau: float = 0.01
    c_out: float = 30.0
    c_big: float = 100.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"constant {f.name} must be a finite number, got {value!r}")
            if f.name == "tau":
                if value < 0:
                    raise ValueError(f"constant tau must be >= 0, got {value}")
            elif value <= 0:
                raise ValueError(f"constant {f.name} must be > 0, got {value}")
        if self.c_big < 1:
            raise ValueError(f"constant c_big must be >= 1 (eq. 21), got {self.c_big}")


@dataclass(frozen=True, eq=False)
class Head:
    """One head: scores ``(X w_q)(X w_k)^T`` (causal, no 1/sqrt(d) scaling), output ``softmax . X w_v``."""

    w_q: np.ndarray  # (width, head_dim)
    w_k: np.ndarray  # (width, head_dim)
    w_v: np.ndarray  # (width, width): writes straight into residual rows, as the appendix's W_V


@dataclass(frozen=True, eq=False)
class MLP:
    """``relu(X w1 + b1) w2 + b2``."""

    w1: np.ndarray  # (width, hidden)
    b1: np.ndarray
    w2: np.ndarray  # (hidden, width)
    b2: np.ndarray


@dataclass(frozen=True, eq=False)
class Layer:
    heads: tuple[Head, ...]
    mlp: MLP


@dataclass(frozen=True, eq=False)
class TransformerWeights:
    layers: tuple[Layer, ...]
    layout: ResidualLayout
    tasks: tuple[Task, ...]
    d: int
    m: int
    n: int
    variant: str
    constants: Constants

    @property
    def sequence_length(self) -> int:
        return sequence_length(self.m, self.n)


class _MLPBuilder:
    """Collects ReLU units ``out += w_out * ReLU(sum_i w_i x_i + bias)`` and output biases."""

    def __init__(self, width: int):
        self.width = width
        self.units: list[tuple[dict[int, float], float, dict[int, float]]] = []
        self.b2 = np.zeros(width)

    def relu(self, inputs: dict[int, float], bias: float, outputs: dict[int, float]) -> None:
        self.units.append((inputs, bias, outputs))

    def build(self) -> MLP:
        h = len(self.units)
        w1, b1, w2 = np.zeros((self.width, h)), np.zeros(h), np.zeros((h, self.width))
        for j, (inputs, bias, outputs) in enumerate(self.units):
            for row, w in inputs.items():
                w1[row, j] += w
            b1[j] = bias
            for row, w in outputs.items():
                w2[j, row] += w
        return MLP(w1, b1, w2, self.b2.copy())


class _Draft:
    """Seven layers under construction: a list of heads and an MLP builder per layer."""

    def __init__(self, layout: ResidualLayout):
        self.layout = layout
        self.heads: list[list[Head]] = [[] for _ in range(NUM_LAYERS)]
        self.mlps = [_MLPBuilder(layout.width) for _ in range(NUM_LAYERS)]

    def head(self, layer: int) -> list[Head]:
        return self.heads[layer - 1]

    def mlp(self, layer: int) -> _MLPBuilder:
        return self.mlps[layer - 1]


def _shift_head(layout: ResidualLayout, query: str, key: str, src: str, dst: str, c: float) -> Head:
    """Token t attends to the token u whose ``key`` code equals t's ``query`` code (eqs. 8-12) and
    copies block ``src`` of u into block ``dst`` of t (eq. 10)."""
    L, W = layout.bits, layout.width
    w_q, w_k, w_v = np.zeros((W, L)), np.zeros((W, L)), np.zeros((W, W))
    w_q[layout.rows(query), :] = np.eye(L)
    w_k[layout.rows(key), :] = c * np.eye(L)
    w_v[layout.rows(src), layout.rows(dst)] = np.eye(layout.block(src).size)
    return Head(w_q, w_k, w_v)


def _scalar_head(layout: ResidualLayout, query: str, q_scale: float, key: str, src: str, dst: str) -> Head:
    """A head whose score is ``q_scale * query_t * key_u`` for one-row blocks (eqs. 26, 33)."""
    W = layout.width
    w_q, w_k, w_v = np.zeros((W, 1)), np.zeros((W, 1)), np.zeros((W, W))
    w_q[layout.row(query), 0] = q_scale
    w_k[layout.row(key), 0] = 1.0
    w_v[layout.rows(src), layout.rows(dst)] = np.eye(layout.block(src).size)
    return Head(w_q, w_k, w_v)


def lemma1_label_positions(draft: _Draft, c: Constants) -> None:
    """Lemma 1 (eqs. 4-5), layer 1 attention: the query ``p_{t-1}`` meets the key ``C p_u`` at
    ``u = t - 1``, so the '=' flag moves one token right onto the label. Writing it into a fresh
    ``label`` row replaces the appendix's second head that clears the original 1s."""
    draft.head(1).append(_shift_head(draft.layout, "pos_prev", "pos", "eq", "label", c.c_pos))


def lemma2_task_outputs(draft: _Draft, tasks: Sequence[Task], n: int, c: Constants) -> None:
    """Lemma 2 (eqs. 6-17) for every task k.

    Layer 1 MLP (eq. 7): ``g~_k`` at every token, one ReLU unit per term of Definition 1 per
    coordinate. Layer 2 head k (eqs. 8-15): query ``p_{t-s}``, key ``C p_u`` with ``s = n - i``:
    the label of example j receives ``g~_k(x_i^(j))``. Layer 2 MLP (eq. 17): subtract the token,
    ``z = ReLU(z) - ReLU(-z)`` for ``z = aligned - x``.
    """
    lay = draft.layout
    x = lay.indices("x")
    for k, task in enumerate(tasks):
        rs = task.relu_sum
        for r, g in zip(x, lay.indices(f"g{k}")):
            for (a_x, a_one), c_m in zip(rs.a, rs.c):
                draft.mlp(1).relu({r: a_x}, a_one, {g: c_m})
        s = n - task.position
        draft.head(2).append(_shift_head(lay, f"pos_shift{s}", "pos", f"g{k}", f"aligned{k}", c.c_pos))
        for r, a, out in zip(x, lay.indices(f"aligned{k}"), lay.indices(f"diff{k}")):
            draft.mlp(2).relu({a: 1.0, r: -1.0}, 0.0, {out: 1.0})
            draft.mlp(2).relu({a: -1.0, r: 1.0}, 0.0, {out: -1.0})


def lemma3_task_proportions(draft: _Draft, num_tasks: int, c: Constants) -> None:
    """Lemma 3 (eqs. 18-28) for every task k.

    Layer 3 MLP (eq. 19, with the sign corrected: ``|z| = ReLU(z) + ReLU(-z)``; the printed
    ``ReLU(z) - ReLU(-z)`` is ``z``). Layer 4 MLP (eq. 21): ``x <- x + 1 - ReLU(x - Cb) -
    ReLU(Cb - C + 1)`` sets the norm to 1 off labels (b = label row). Layer 5 MLP (eq. 24 with a
    dead zone): ``delta^ = ReLU(b(1 + C tau) - C z) - ReLU(b C tau - C z)`` is 1 for ``z <= tau``, 0
    for ``z >= tau + 1/C`` and 0 whenever ``b = 0``; ``tau = 0`` drops the second unit and is eq. 24.
    Layer 6 head k (eqs. 26-27): score ``c_avg * label_u``, value ``delta^``: with causal masking the
    token t holds the share of task k among the labels before it, ``p_k`` at the query.
    """
    lay = draft.layout
    label = lay.row("label")
    for k in range(num_tasks):
        norm, ind = lay.row(f"norm{k}"), lay.row(f"ind{k}")
        for z in lay.indices(f"diff{k}"):
            draft.mlp(3).relu({z: 1.0}, 0.0, {norm: 1.0})
            draft.mlp(3).relu({z: -1.0}, 0.0, {norm: 1.0})
        draft.mlp(4).b2[norm] += 1.0
        draft.mlp(4).relu({norm: 1.0, label: -c.c_big}, 0.0, {norm: -1.0})
        draft.mlp(4).relu({label: c.c_big}, 1.0 - c.c_big, {norm: -1.0})
        draft.mlp(5).relu({label: 1.0 + c.c_delta * c.tau, norm: -c.c_delta}, 0.0, {ind: 1.0})
        if c.tau > 0:
            draft.mlp(5).relu({label: c.c_delta * c.tau, norm: -c.c_delta}, 0.0, {ind: -1.0})
        draft.head(6).append(_scalar_head(lay, "one", c.c_avg, "label", f"ind{k}", f"prop{k}"))


def exact_logit_knots(m: int, c_out: float) -> np.ndarray:
    """Values of the exact variant's score at ``p = r/m``: ``log(r / (m - r))``, clamped to
    ``[-c_out, c_out]`` (so ``+-c_out`` at ``p = 0, 1``). Against a competitor of score 0 the
    softmax weight is ``sigmoid(score) = r/m`` exactly at every interior grid point."""
    r = np.arange(m + 1, dtype=np.float64)
    with np.errstate(divide="ignore"):
        logits = np.log(r) - np.log(m - r)
    return np.clip(logits, -c_out, c_out)


def lemma4_weighted_output(draft: _Draft, tasks: Sequence[Task], m: int, n: int, variant: str,
                           c: Constants) -> None:
    """Lemma 4 (eqs. 29-36) with one head per task (D.4).

    Layer 1 MLP: the last two rows of eq. 30, ``ReLU(code . p_t - (bits - 1))`` is 1 exactly at the
    token whose code is ``code`` (the query's '=' at N-1, and N-2). Layer 3 head k (eq. 30, "slightly
    different positional encodings"): query ``p_{t-s}`` against key ``p_{u-1}`` picks
    ``u = t - s + 1``, the query's ``x_i``, whose ``g~_k`` lands in ``query_k`` of the last token.
    Layer 6 MLP (eqs. 31-32): the score row is ``-c_out`` except at the last two tokens, and
    ``query_k`` is cleared except at the last token, subtracting ``(1-h) f = ReLU(f - Ch) - ReLU(-f - Ch)``
    (h = last-token marker, ``|f| <= C = c_big``).
    Layer 7 head k (eqs. 33-35): query = ones, key = score row, value = ``query_k`` written into
    ``out``, so the last token gets ``out = sum_k w_k g~_k(x_query)`` with ``w_k`` the head's weight
    on the last token.

    Scores at (second-to-last, last): ``sigmoid`` puts ``(1 - p, p)``, giving ``w = 1/(1 + e^{1-2p})``
    as eqs. 34 and 36 state. (Eq. 31 as printed puts p second-to-last and 1 - p last; with the value
    on the last token that yields ``1 - 1/(1 + e^{1-2p})``, eq. 35, contradicting eq. 36.)
    ``exact`` puts ``(0, logit(p))`` with the logit interpolated piecewise-linearly through
    ``exact_logit_knots`` (m ReLU units), so ``w = p`` up to softmax leakage whenever p is a
    multiple of 1/m, which the indicators' dead zone guarantees.
    """
    lay = draft.layout
    N, L = sequence_length(m, n), lay.bits
    for name, t in (("last", N - 1), ("second_last", N - 2)):
        code = binary_codes(torch.tensor([t + n]), L)[0].numpy()
        draft.mlp(1).relu(dict(zip(lay.indices("pos"), code)), -(L - 1.0), {lay.row(name): 1.0})
    last, second = lay.row("last"), lay.row("second_last")
    if variant == "exact":
        values = exact_logit_knots(m, c.c_out)
        slopes = np.diff(values) * m
        kinks = np.diff(np.concatenate([[0.0], slopes]))
    for k, task in enumerate(tasks):
        s = n - task.position
        draft.head(3).append(_shift_head(lay, f"pos_shift{s}", "pos_prev", f"g{k}", f"query{k}", c.c_pos))
        mlp, p, score = draft.mlp(6), lay.row(f"prop{k}"), lay.row(f"score{k}")
        # -c_out everywhere, 0 on the second-to-last token; p in [0, 1], so a gate of 2 suffices.
        mlp.b2[score] -= c.c_out
        mlp.relu({second: 1.0}, 0.0, {score: c.c_out})
        if variant == "sigmoid":
            mlp.relu({last: 1.0}, 0.0, {score: c.c_out})
            mlp.relu({p: 1.0, last: 2.0}, -2.0, {score: 1.0})
            mlp.relu({p: -1.0, second: 2.0}, -1.0, {score: 1.0})
        else:  # the logit starts at values[0] = -c_out, the baseline: only its kinks are added
            for r, kink in enumerate(kinks):
                mlp.relu({p: 1.0, last: 2.0}, -r / m - 2.0, {score: kink})
        for f in lay.indices(f"query{k}"):
            mlp.relu({f: 1.0, last: -c.c_big}, 0.0, {f: -1.0})
            mlp.relu({f: -1.0, last: -c.c_big}, 0.0, {f: 1.0})
        draft.head(7).append(_scalar_head(lay, "one", 1.0, f"score{k}", f"query{k}", "out"))


def validate(tasks: Sequence[Task], d: int, m: int, n: int, variant: str) -> None:
    """One-line ``ValueError`` for every input the construction does not cover."""
    if not isinstance(d, int) or d < 1:
        raise ValueError(f"token dimension d must be an integer >= 1, got {d!r}")
    if not isinstance(m, int) or m < 1:
        raise ValueError(f"number of in-context examples m must be an integer >= 1, got {m!r}")
    if not isinstance(n, int) or n < 3:
        raise ValueError(f"example length n must be an integer >= 3 (x_1, '=', y), got {n!r}")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    if len(tasks) < 1:
        raise ValueError("need at least one task (K >= 1), got K = 0")
    seen: dict[tuple[str, int], int] = {}
    for k, task in enumerate(tasks):
        if not isinstance(task, Task):
            raise ValueError(f"task {k} is a {type(task).__name__}, not a tasksup.theory Task")
        if task.dim != d:
            raise ValueError(f"task {k} ({task.label}) has input dimension {task.dim}, but d = {d}")
        if not 1 <= task.position <= n - 2:
            raise ValueError(f"task {k} ({task.label}) reads position {task.position}, outside 1..{n - 2} for n = {n}")
        if task.key in seen:
            raise ValueError(f"tasks {seen[task.key]} and {k} are both {task.label}: identical tasks cannot be told apart")
        seen[task.key] = k


def _pad_heads(heads: list[Head], num_heads: int, width: int) -> tuple[Head, ...]:
    """K heads of one common head dimension; heads a stage does not need are zero (no-ops)."""
    dim = max([h.w_q.shape[1] for h in heads] + [1])

    def pad(a: np.ndarray) -> np.ndarray:
        return np.pad(a, ((0, 0), (0, dim - a.shape[1])))

    out = [Head(pad(h.w_q), pad(h.w_k), h.w_v) for h in heads]
    zero = Head(np.zeros((width, dim)), np.zeros((width, dim)), np.zeros((width, width)))
    return tuple(out + [zero] * (num_heads - len(out)))


def build_weights(tasks: Sequence[Task], d: int, m: int, n: int, variant: str = "exact",
                  constants: Constants | None = None) -> TransformerWeights:
    """The weights of Theorem 1's transformer for ``tasks`` (K = len(tasks)) on prompts of ``m``
    examples of length ``n`` with ``d``-dimensional tokens."""
    tasks = tuple(tasks)
    validate(tasks, d, m, n, variant)
    c = constants if constants is not None else Constants()
    shifts = tuple(sorted({n - t.position for t in tasks}))
    layout = ResidualLayout(d, len(tasks), position_bits(m, n), shifts)
    draft = _Draft(layout)
    lemma1_label_positions(draft, c)
    lemma2_task_outputs(draft, tasks, n, c)
    lemma3_task_proportions(draft, len(tasks), c)
    lemma4_weighted_output(draft, tasks, m, n, variant, c)
    layers = tuple(Layer(_pad_heads(h, len(tasks), layout.width), b.build())
                   for h, b in zip(draft.heads, draft.mlps))
    return TransformerWeights(layers, layout, tasks, d, m, n, variant, c)
