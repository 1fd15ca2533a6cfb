"""Grow a trained GPT-2 into a larger one that computes the same function (for benchmarks).

``widen_gpt2(model, factor, extra_layers)`` copies every residual-stream coordinate ``factor`` times
(Net2Net-style): LayerNorm sees the same mean and variance, every head is repeated ``factor`` times
with the same head size, every linear map takes ``W / factor`` from each copy of its input and writes
its output to every copy. The output head is untied and divided by ``factor``. ``extra_layers``
appends blocks whose two output projections are zero, i.e. identities on the residual stream.

The result has the parameter count and the per-token compute of a genuinely larger GPT-2 but the
trained model's next-token distributions (to float rounding), hence the same exact top-k search
tree: a faithful stand-in for timing a ~10M model without training one on 2 CPU cores.
"""

from __future__ import annotations

import torch


def _tile_linear(w: torch.Tensor, f: int, out_blocks: int = 1) -> torch.Tensor:
    """A Conv1D weight [in, out]: inputs from f copies (each / f), each of ``out_blocks`` output blocks tiled f times."""
    blocks = w.split(w.shape[1] // out_blocks, dim=1)
    return torch.cat([b.repeat(1, f) for b in blocks], dim=1).repeat(f, 1) / f


def _tile_bias(b: torch.Tensor, f: int, out_blocks: int = 1) -> torch.Tensor:
    return torch.cat([x.repeat(f) for x in b.split(b.shape[0] // out_blocks)])


@torch.no_grad()
def widen_gpt2(model, factor: int, extra_layers: int = 0):
    """A new ``GPT2LMHeadModel``, ``factor`` times wider (and as many more heads) and ``extra_layers``
    deeper, whose logits equal ``model``'s."""
    from transformers import GPT2Config, GPT2LMHeadModel

    c, f = model.config, factor
    cfg = GPT2Config(**{**c.to_dict(), "n_embd": c.n_embd * f, "n_head": c.n_head * f,
                        "n_layer": c.n_layer + extra_layers, "tie_word_embeddings": False})
    big = GPT2LMHeadModel(cfg).eval()
    src, dst = model.transformer, big.transformer
    dst.wte.weight.copy_(src.wte.weight.repeat(1, f))
    dst.wpe.weight.copy_(src.wpe.weight.repeat(1, f))
    for i, block in enumerate(dst.h):
        if i >= c.n_layer:  # an identity block: both writes to the residual stream are zero
            block.attn.c_proj.weight.zero_(), block.attn.c_proj.bias.zero_()
            block.mlp.c_proj.weight.zero_(), block.mlp.c_proj.bias.zero_()
            continue
        old = src.h[i]
        for ln in ("ln_1", "ln_2"):
            getattr(block, ln).weight.copy_(getattr(old, ln).weight.repeat(f))
            getattr(block, ln).bias.copy_(getattr(old, ln).bias.repeat(f))
        block.attn.c_attn.weight.copy_(_tile_linear(old.attn.c_attn.weight, f, out_blocks=3))  # q | k | v
        block.attn.c_attn.bias.copy_(_tile_bias(old.attn.c_attn.bias, f, out_blocks=3))
        for name in ("attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            new, was = big.get_submodule(f"transformer.h.{i}.{name}"), old.get_submodule(name)
            new.weight.copy_(_tile_linear(was.weight, f))
            new.bias.copy_(_tile_bias(was.bias, f))
    dst.ln_f.weight.copy_(src.ln_f.weight.repeat(f))
    dst.ln_f.bias.copy_(src.ln_f.bias.repeat(f))
    big.lm_head.weight.copy_(model.lm_head.weight.repeat(1, f) / f)
    return big
