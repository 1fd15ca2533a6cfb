"""A plain-PyTorch transformer that runs the constructed weights.

Pre-residual layers without layer norm: ``X <- X + sum_h softmax_causal((X Wq_h)(X Wk_h)^T) X Wv_h``
then ``X <- X + relu(X W1 + b1) W2 + b2``. ``run`` keeps the residual stream after every sublayer
and the attention weights, which the tests read to check each lemma's stage on its own.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tasksup.theory.construction import TransformerWeights
from tasksup.theory.layout import embed


@dataclass(frozen=True)
class Trace:
    """``residuals['L3.mlp']`` is the stream after layer 3's MLP; ``attention[l]`` is (K, N, N)."""

    residuals: dict[str, torch.Tensor]
    attention: list[torch.Tensor]
    output: torch.Tensor  # the ``out`` rows at the last token

    @property
    def task_weights(self) -> torch.Tensor:
        """``w_k``: weight of layer 7's head k on the last token, the only one whose value is not 0."""
        return self.attention[-1][:, -1, -1]


@contextmanager
def _one_thread():
    """The matrices are tiny (width ~100, N <= ~400): intra-op threads only add synchronisation,
    which on a loaded two-core machine made a forward pass 80 times slower. Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _param(a) -> nn.Parameter:
    return nn.Parameter(torch.from_numpy(np.array(a, dtype=np.float64)), requires_grad=False)


class SuperpositionTransformer(nn.Module):
    """Seven layers, K heads each, with the weights of ``build_weights``; float64 throughout."""

    def __init__(self, weights: TransformerWeights):
        super().__init__()
        self.construction = weights
        self.layout = weights.layout
        self.w_q = nn.ParameterList([_param([h.w_q for h in layer.heads]) for layer in weights.layers])
        self.w_k = nn.ParameterList([_param([h.w_k for h in layer.heads]) for layer in weights.layers])
        self.w_v = nn.ParameterList([_param([h.w_v for h in layer.heads]) for layer in weights.layers])
        self.w1 = nn.ParameterList([_param(layer.mlp.w1) for layer in weights.layers])
        self.b1 = nn.ParameterList([_param(layer.mlp.b1) for layer in weights.layers])
        self.w2 = nn.ParameterList([_param(layer.mlp.w2) for layer in weights.layers])
        self.b2 = nn.ParameterList([_param(layer.mlp.b2) for layer in weights.layers])

    @property
    def num_layers(self) -> int:
        return len(self.w_q)

    @property
    def heads_per_layer(self) -> list[int]:
        return [w.shape[0] for w in self.w_q]

    @property
    def width(self) -> int:
        return self.layout.width

    def embed(self, tokens: torch.Tensor, is_eq: torch.Tensor) -> torch.Tensor:
        c = self.construction
        N = c.sequence_length
        if tokens.ndim != 2 or tokens.shape != (N, c.d):
            raise ValueError(f"tokens must have shape ({N}, {c.d}) for m={c.m}, n={c.n}, d={c.d}; got {tuple(tokens.shape)}")
        if is_eq.shape != (N,):
            raise ValueError(f"is_eq must have shape ({N},), got {tuple(is_eq.shape)}")
        return embed(self.layout, tokens, is_eq, c.n)

    def run(self, tokens: torch.Tensor, is_eq: torch.Tensor) -> Trace:
        with _one_thread():
            return self._run(self.embed(tokens, is_eq))

    def _run(self, X: torch.Tensor) -> Trace:
        N = X.shape[0]
        future = torch.triu(torch.ones(N, N, dtype=torch.bool), diagonal=1)
        residuals, attention = {"embed": X}, []
        for i in range(self.num_layers):
            q = torch.einsum("nw,hwe->hne", X, self.w_q[i])
            k = torch.einsum("nw,hwe->hne", X, self.w_k[i])
            v = torch.einsum("nw,hwv->hnv", X, self.w_v[i])
            probs = torch.softmax((q @ k.transpose(1, 2)).masked_fill(future, float("-inf")), dim=-1)
            X = X + torch.einsum("hnm,hmv->nv", probs, v)
            residuals[f"L{i + 1}.attn"] = X
            X = X + torch.relu(X @ self.w1[i] + self.b1[i]) @ self.w2[i] + self.b2[i]
            residuals[f"L{i + 1}.mlp"] = X
            attention.append(probs)
        return Trace(residuals, attention, X[-1, self.layout.rows("out")])

    @torch.no_grad()
    def forward(self, tokens: torch.Tensor, is_eq: torch.Tensor) -> torch.Tensor:
        """``sum_k w_k g~_k(x_query)`` at the last token."""
        return self.run(tokens, is_eq).output
