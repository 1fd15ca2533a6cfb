"""Read and write the residual stream of any Hugging Face decoder at one token position.

``capturing(model, position)`` records the output of every decoder layer at a position;
``patching(model, patches)`` replaces (or adds to) it. Both are context managers built on forward
hooks that are removed on exit, errors included, so ``LanguageModel.answer_probs`` and
``top_outputs`` run unchanged inside them.

Positions
---------
A forward pass that starts a sequence (no KV cache, or an empty one) is a *prompt pass*; a pass
that continues a cache (scoring answers, best-first search) is a *continuation*. A negative
``position`` counts from the end of the prompt pass (-1: its last token, the query's separator);
continuations are left alone, and they see the patched prompt through the cache, which holds the
keys and values computed from the patched states. With left padding (batched scoring) -1 is the
last token of every row. A non-negative ``position`` is an absolute token index, patched in
whichever pass contains it (batches without left padding only).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from tasksup.errors import TasksupError
from tasksup.compat import find_cache

# Where the decoder layers of the common architectures live (checked first, then a generic search).
LAYER_PATHS = ("transformer.h", "model.layers", "gpt_neox.layers", "model.decoder.layers", "transformer.layers",
               "transformer.blocks", "layers")
# The attention output projection inside one decoder layer: its input is the heads' outputs, concatenated.
ATTENTION_OUT_PATHS = ("attn.c_proj", "self_attn.o_proj", "attention.dense", "self_attention.dense",
                       "attn.out_proj", "self_attn.out_proj", "attention.o_proj")
LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers")
HEAD_COUNT_KEYS = ("num_attention_heads", "n_head", "num_heads")
MODES = ("replace", "add")


def _get(module: torch.nn.Module, path: str):
    for name in path.split("."):
        module = getattr(module, name, None)
        if module is None:
            return None
    return module


def _config_int(model, keys) -> int | None:
    cfg = getattr(model, "config", None)
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    for key in keys:
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The model's decoder layers, in order (GPT-2, Llama, Qwen2, GPT-NeoX and look-alikes).

    Known attribute paths first; otherwise the one ``ModuleList`` whose length is the configured
    number of layers. Anything else is a :class:`TasksupError` naming the model class.
    """
    n = _config_int(model, LAYER_COUNT_KEYS)
    for path in LAYER_PATHS:
        found = _get(model, path)
        if isinstance(found, torch.nn.ModuleList) and len(found) > 0 and (n is None or len(found) == n):
            return found
    candidates = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and n is not None and len(m) == n]
    if len(candidates) == 1:
        return candidates[0]
    raise TasksupError(f"cannot locate the decoder layers of {type(model).__name__} "
                       f"(looked for {', '.join(LAYER_PATHS)} and a unique ModuleList of the configured length)")


def attention_out_projs(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Each decoder layer's attention output projection; its input is all heads' outputs, concatenated."""
    out = []
    for layer in decoder_layers(model):
        found = next((m for m in (_get(layer, p) for p in ATTENTION_OUT_PATHS) if isinstance(m, torch.nn.Module)), None)
        if found is None:
            raise TasksupError(f"cannot locate the attention output projection in {type(layer).__name__} of "
                               f"{type(model).__name__} (looked for {', '.join(ATTENTION_OUT_PATHS)})")
        out.append(found)
    return out


def head_count(model: torch.nn.Module) -> int:
    n = _config_int(model, HEAD_COUNT_KEYS)
    if n is None:
        raise TasksupError(f"cannot find the number of attention heads in the config of {type(model).__name__}")
    return n


def _hidden(output):
    return output[0] if isinstance(output, tuple) else output


def _with_hidden(output, hidden):
    return (hidden,) + tuple(output[1:]) if isinstance(output, tuple) else hidden


def _base(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "base_model", None) or model


class _PassTracker:
    """Which token positions the current forward pass covers (a pre-hook on the base model reads the cache)."""

    def __init__(self, model):
        self.past = 0
        self.handle = _base(model).register_forward_pre_hook(self._pre, with_kwargs=True)

    def _pre(self, module, args, kwargs):
        # the cache object, whatever keyword carries it (transformers 5.24 renamed past_key_values to cache)
        cache = find_cache([*args, *kwargs.values()])
        self.past = int(cache.get_seq_length()) if cache is not None else 0

    def index(self, position: int, length: int) -> int | None:
        """The index of ``position`` in this pass's ``length`` tokens, or None when the pass does not hold it."""
        if position < 0:
            i = length + position if self.past == 0 else -1
        else:
            i = position - self.past
        return i if 0 <= i < length else None


def _validate_layer(layer: int, n: int) -> int:
    if not -n <= layer < n:
        raise TasksupError(f"layer {layer} is out of range: the model has {n} decoder layers (0..{n - 1})")
    return layer % n


@dataclass
class Patch:
    """Write ``vector`` into the output of decoder layer ``layer`` at ``position``.

    ``mode="replace"`` sets the hidden state to the vector (Hendel et al.'s task vectors);
    ``"add"`` adds it (Todd et al.'s function vectors). ``vector``: [d], or [batch, d] for one per row.
    """

    layer: int
    vector: torch.Tensor
    mode: str = "replace"
    position: int = -1

    def __post_init__(self):
        if self.mode not in MODES:
            raise TasksupError(f"patch mode must be one of {MODES}, got {self.mode!r}")


def _by_layer(patches: Sequence, n_layers: int) -> dict[int, list]:
    """Patches grouped by their (validated) layer index: one hook per layer."""
    groups: dict[int, list] = {}
    for p in patches:
        groups.setdefault(_validate_layer(p.layer, n_layers), []).append(p)
    return groups


@contextmanager
def _hooks(model) -> Iterator[tuple[_PassTracker, list]]:
    tracker = _PassTracker(model)
    handles = [tracker.handle]
    try:
        yield tracker, handles
    finally:
        for h in handles:
            h.remove()


@contextmanager
def patching(model: torch.nn.Module, patches: Sequence[Patch]) -> Iterator[None]:
    """Apply ``patches`` to every forward pass inside the block; the hooks are removed on exit."""
    layers = decoder_layers(model)
    by_layer = _by_layer(patches, len(layers))
    with _hooks(model) as (tracker, handles):
        for index, group in by_layer.items():
            def hook(module, args, output, group=group):
                hidden = _hidden(output)
                edits = [(tracker.index(p.position, hidden.shape[1]), p) for p in group]
                edits = [(i, p) for i, p in edits if i is not None]
                if not edits:
                    return output
                hidden = hidden.clone()
                for i, p in edits:
                    v = p.vector.to(hidden.device, hidden.dtype)
                    hidden[:, i] = v if p.mode == "replace" else hidden[:, i] + v
                return _with_hidden(output, hidden)

            handles.append(layers[index].register_forward_hook(hook))
        yield


class Capture:
    """Hidden states recorded by :func:`capturing`: one [batch, d] tensor per forward pass and layer."""

    def __init__(self, n_layers: int):
        self.states: list[list[torch.Tensor]] = [[] for _ in range(n_layers)]

    def stacked(self) -> torch.Tensor:
        """All recorded rows as one float32 tensor [rows, n_layers, d] (rows in the order they ran)."""
        if not self.states[0]:
            raise TasksupError("nothing was captured: no forward pass ran inside the capturing block")
        return torch.stack([torch.cat(s) for s in self.states], dim=1)


@contextmanager
def capturing(model: torch.nn.Module, position: int = -1) -> Iterator[Capture]:
    """Record every decoder layer's output at ``position`` in each pass that holds it."""
    layers = decoder_layers(model)
    capture = Capture(len(layers))
    with _hooks(model) as (tracker, handles):
        for index, layer in enumerate(layers):
            def hook(module, args, output, index=index):
                hidden = _hidden(output)
                i = tracker.index(position, hidden.shape[1])
                if i is not None:
                    capture.states[index].append(hidden[:, i].detach().float().cpu())

            handles.append(layer.register_forward_hook(hook))
        yield capture


@dataclass
class HeadPatch:
    """Replace attention head ``head``'s output (its slice of the output projection's input) at ``position``."""

    layer: int
    head: int
    activation: torch.Tensor  # [head_dim]
    position: int = -1


@contextmanager
def patching_heads(model: torch.nn.Module, patches: Sequence[HeadPatch]) -> Iterator[None]:
    """Apply head-level ``patches`` to every forward pass inside the block; the hooks are removed on exit."""
    projs = attention_out_projs(model)
    by_layer = _by_layer(patches, len(projs))
    with _hooks(model) as (tracker, handles):
        for index, group in by_layer.items():
            def pre_hook(module, args, group=group):
                heads = args[0]
                edits = [(tracker.index(p.position, heads.shape[1]), p) for p in group]
                edits = [(i, p) for i, p in edits if i is not None]
                if not edits:
                    return None
                heads = heads.clone()
                for i, p in edits:
                    dim = p.activation.shape[-1]
                    heads[:, i, p.head * dim:(p.head + 1) * dim] = p.activation.to(heads.device, heads.dtype)
                return (heads,) + tuple(args[1:])

            handles.append(projs[index].register_forward_pre_hook(pre_hook))
        yield


@contextmanager
def capturing_heads(model: torch.nn.Module, position: int = -1) -> Iterator[Capture]:
    """Record every layer's concatenated head outputs (the output projection's input) at ``position``."""
    projs = attention_out_projs(model)
    capture = Capture(len(projs))
    with _hooks(model) as (tracker, handles):
        for index, proj in enumerate(projs):
            def pre_hook(module, args, index=index):
                i = tracker.index(position, args[0].shape[1])
                if i is not None:
                    capture.states[index].append(args[0][:, i].detach().float().cpu())

            handles.append(proj.register_forward_pre_hook(pre_hook))
        yield capture
