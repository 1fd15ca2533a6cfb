"""Decoding from superposition: exact top-k with task attribution, sampling, greedy, Superposed Decoding.

- :func:`decode` / ``LanguageModel.decode_superposed``: the k most probable complete outputs of
  one prompt (exact, best-first search), each attributed to the task it answers.
- :func:`sample_outputs`, :func:`greedy_output`: the conventional decoders, after one prompt pass.
- :func:`superposed_decode`: Shen et al. (2024), one forward pass per step for k drafts.

Docs and measured numbers: ``docs/decoding.md``.
"""

import importlib

# Every public name and its submodule, imported on first use: they import torch, which the CLI (and this
# package's `command` module) does not need before it has checked its input.
_EXPORTS = {
    **dict.fromkeys(["Decoded", "TaskShare", "attribute", "decode", "default_max_tokens", "query_line", "task_answers",
                     "task_mixture"], "attribution"),
    **dict.fromkeys(["Generation", "PromptState", "greedy_output", "sample_outputs"], "generate"),
    **dict.fromkeys(["SuperposedResult", "superposed_decode"], "superposed"),
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
