"""The residual stream: which rows hold what, and the input embedding with its positional codes.

Rows are named blocks. Inputs are the token ``x`` (``d`` rows), the '=' flag, a row of ones and the
binary positional codes of Lemmas 1-2 (eqs. 4, 6); every later block is written by one stage of the
construction (see ``SCHEDULE`` in ``construction.py``). Tokens are rows of the residual matrix here,
i.e. the transpose of the appendix's column convention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Block:
    name: str
    start: int
    size: int
    holds: str  # what the block holds at the position where it matters
    equation: str  # where the appendix introduces it

    @property
    def rows(self) -> slice:
        return slice(self.start, self.start + self.size)


def position_bits(m: int, n: int) -> int:
    """Bits of the binary positional codes, ``ceil(log2(N + n))`` with ``N = m n + n - 1`` tokens.

    Position ``t`` (0-based) is encoded as the integer ``t + n``, as in eq. 4 where the first token
    carries ``p_{n+1}``: then the shifted codes ``p_{t-s}`` (``s <= n-1``) of eq. 6 stay positive.
    """
    return max(1, math.ceil(math.log2(sequence_length(m, n) + n)))


def sequence_length(m: int, n: int) -> int:
    """``m`` examples of ``n`` tokens, then the query ``x_1..x_{n-2}, '='`` (the label is predicted)."""
    return m * n + n - 1


def binary_codes(indices: torch.Tensor, bits: int) -> torch.Tensor:
    """Codes in ``{-1, 1}^bits`` (most significant bit first). ``p_k . p_k = bits`` and
    ``p_k . p_l <= bits - 2`` for ``k != l``: the threshold the shift heads rely on (eq. 6)."""
    powers = 2 ** torch.arange(bits - 1, -1, -1)
    return ((indices[:, None] // powers) % 2).to(torch.float64) * 2.0 - 1.0


class ResidualLayout:
    """Named row blocks of the residual stream for ``num_tasks`` tasks on ``d``-dimensional tokens.

    ``shifts`` are the distinct copy distances ``s = n - i`` of the tasks: each needs its own
    shifted code ``p_{t-s}`` (eq. 6), so tasks reading the same position share one.
    """

    def __init__(self, d: int, num_tasks: int, bits: int, shifts: tuple[int, ...]):
        self.d, self.num_tasks, self.bits, self.shifts = d, num_tasks, bits, shifts
        self.blocks: list[Block] = []
        add = self._add
        add("x", d, "token content x (0 for '=')", "eq. 4 row 1")
        add("eq", 1, "1 on '=' tokens", "eq. 4 row 2")
        add("one", 1, "constant 1", "eq. 6 row 4")
        add("pos", bits, "p_t", "eq. 4 row 3 / eq. 6")
        add("pos_prev", bits, "p_{t-1}", "eq. 4 row 4")
        for s in shifts:
            add(f"pos_shift{s}", bits, f"p_{{t-{s}}}", "eq. 6 last row")
        add("label", 1, "1 on label tokens y (Lemma 1 output)", "eq. 5")
        add("last", 1, "1 on the last token (query '=')", "eq. 30 last-but-one row")
        add("second_last", 1, "1 on the token before it", "eq. 30 last row")
        add("out", d, "sum_k w_k g~_k(x_query) at the last token", "eq. 36, D.4")
        for k in range(num_tasks):
            add(f"g{k}", d, f"g~_{k}(x_t) at every token", "eq. 7")
            add(f"aligned{k}", d, f"g~_{k}(x_i^(j)) at label j", "eq. 15")
            add(f"diff{k}", d, f"g~_{k}(x_i^(j)) - y^(j) at label j", "eq. 17")
            add(f"norm{k}", 1, f"|g~_{k}(x_i^(j)) - y^(j)|_1 at labels, 1 elsewhere", "eqs. 20, 22")
            add(f"ind{k}", 1, f"delta^_{k}: 1 iff example j is task {k}'s", "eqs. 24-25")
            add(f"prop{k}", 1, f"p_{k}: running share of task {k}", "eq. 28")
            add(f"score{k}", 1, "attention score for the weighting head", "eq. 31")
            add(f"query{k}", d, f"g~_{k}(x_query) at the last token, 0 elsewhere", "eqs. 30, 32")

    def _add(self, name: str, size: int, holds: str, equation: str) -> None:
        start = self.blocks[-1].start + self.blocks[-1].size if self.blocks else 0
        self.blocks.append(Block(name, start, size, holds, equation))

    @property
    def width(self) -> int:
        return self.blocks[-1].start + self.blocks[-1].size

    def block(self, name: str) -> Block:
        for b in self.blocks:
            if b.name == name:
                return b
        raise KeyError(name)

    def rows(self, name: str) -> slice:
        return self.block(name).rows

    def row(self, name: str) -> int:
        """Index of a one-row block."""
        b = self.block(name)
        assert b.size == 1, name
        return b.start

    def indices(self, name: str) -> list[int]:
        return list(range(self.block(name).start, self.block(name).start + self.block(name).size))

    @staticmethod
    def width_formula(d: int, num_tasks: int, bits: int, num_shifts: int) -> int:
        """``2d + 5 + (2 + S) L + K (4d + 4)``: the width this layout uses."""
        return 2 * d + 5 + (2 + num_shifts) * bits + num_tasks * (4 * d + 4)


def embed(layout: ResidualLayout, tokens: torch.Tensor, is_eq: torch.Tensor, n: int) -> torch.Tensor:
    """The input residual stream: tokens, '=' flags, ones and the codes ``p_t, p_{t-1}, p_{t-s}``."""
    N = tokens.shape[0]
    X = torch.zeros(N, layout.width, dtype=torch.float64)
    X[:, layout.rows("x")] = tokens.to(torch.float64)
    X[:, layout.row("eq")] = is_eq.to(torch.float64)
    X[:, layout.row("one")] = 1.0
    code = torch.arange(N) + n
    X[:, layout.rows("pos")] = binary_codes(code, layout.bits)
    X[:, layout.rows("pos_prev")] = binary_codes(code - 1, layout.bits)
    for s in layout.shifts:
        X[:, layout.rows(f"pos_shift{s}")] = binary_codes(code - s, layout.bits)
    return X
