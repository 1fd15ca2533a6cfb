"""Loading causal LMs (Hugging Face directories, hub ids, our checkpoints) and the model wrapper."""

import importlib

from tasksup.models.loading import load_model, load_tokenizer

# The others on first use: they import torch and transformers, which load_model needs only once it has
# checked the model's path.
_EXPORTS = {"LanguageModel": "wrapper", "build_char_tokenizer": "char_tokenizer"}
__all__ = ["LanguageModel", "build_char_tokenizer", "load_model", "load_tokenizer"]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
