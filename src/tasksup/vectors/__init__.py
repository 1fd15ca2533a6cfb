"""Task vectors (paper §6, App. C): extraction, patching, layer selection, decomposition, LDA geometry.

>>> from tasksup.vectors import task_vectors, lone_queries, layer_curve, Patch, patching
>>> v = task_vectors(lm, [task], n_prompts=100, n_examples=60, seed=0)[task.name]   # [n_layers, d]
>>> curve = layer_curve(lm, v, lone_queries(task, 100, seed=0))                     # accuracy per layer
>>> with patching(lm.model, [Patch(curve.best_layer, v[curve.best_layer])]):
...     lm.answer_probs("12@34=", ["12", "34"])
"""

import importlib

# Every public name and its submodule, imported on first use: they import torch and scipy, which the CLI
# (and this package's `cli` module) does not need before it has checked its input.
_EXPORTS = {
    **dict.fromkeys(["interpolate", "simplex_weights"], "decompose"),
    **dict.fromkeys(["last_token_states", "lone_queries", "task_prompts", "task_vectors"], "extract"),
    **dict.fromkeys(["Capture", "HeadPatch", "Patch", "attention_out_projs", "capturing", "capturing_heads",
                     "decoder_layers", "patching", "patching_heads"], "hooks"),
    **dict.fromkeys(["LayerCurve", "layer_curve", "top1_outputs"], "select"),
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
