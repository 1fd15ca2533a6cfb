"""Task vectors (paper §6, App. C): extraction, patching, layer selection, decomposition, LDA geometry.

>>> from tasksup.vectors import task_vectors, lone_queries, layer_curve, Patch, patching
>>> v = task_vectors(lm, [task], n_prompts=100, n_examples=60, seed=0)[task.name]   # [n_layers, d]
>>> curve = layer_curve(lm, v, lone_queries(task, 100, seed=0))                     # accuracy per layer
>>> with patching(lm.model, [Patch(curve.best_layer, v[curve.best_layer])]):
...     lm.answer_probs("12@34=", ["12", "34"])
"""

from tasksup.vectors.decompose import interpolate, simplex_weights
from tasksup.vectors.extract import last_token_states, lone_queries, task_prompts, task_vectors
from tasksup.vectors.hooks import (Capture, HeadPatch, Patch, attention_out_projs, capturing, capturing_heads,
                                   decoder_layers, patching, patching_heads)
from tasksup.vectors.select import LayerCurve, layer_curve, top1_outputs

__all__ = ["Capture", "HeadPatch", "LayerCurve", "Patch", "attention_out_projs", "capturing", "capturing_heads",
           "decoder_layers", "interpolate", "last_token_states", "layer_curve", "lone_queries", "patching",
           "patching_heads", "simplex_weights", "task_prompts", "task_vectors", "top1_outputs"]
