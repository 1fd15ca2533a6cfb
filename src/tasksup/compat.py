"""The KV-cache calling convention of the installed transformers release, found by inspection.

transformers 5.24 renamed the cache argument of every model's ``forward`` from ``past_key_values``
to ``cache`` (the old name still works until 5.40 but warns, and code that reads the old keyword
sees None) and the output field likewise. We ask the model class which name it takes instead of
pinning a release, and code that needs the cache of a running pass looks for the object
(:func:`find_cache`) rather than for a keyword.
"""

from __future__ import annotations

import inspect
from functools import lru_cache
from typing import Any, Iterable


@lru_cache(maxsize=None)
def _forward_params(model_class: type) -> frozenset[str]:
    # the class, not the instance: accelerate's device_map hooks replace the bound forward by a wrapper
    return frozenset(inspect.signature(model_class.forward).parameters)


def cache_kwarg(model) -> str:
    """The keyword under which ``model.forward`` takes a KV cache on this transformers release."""
    return "cache" if "cache" in _forward_params(type(model)) else "past_key_values"


def accepts(model, name: str) -> bool:
    """Whether ``model.forward`` takes keyword ``name`` (e.g. ``logits_to_keep``)."""
    return name in _forward_params(type(model))


def output_cache(output) -> Any:
    """The KV cache a forward pass returned (``output.cache`` from 5.24, ``past_key_values`` before)."""
    cache = output.get("cache") if hasattr(output, "get") else getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)


def find_cache(values: Iterable[Any]) -> Any:
    """The KV cache among a forward call's arguments, whatever its keyword: the one object with a length."""
    return next((v for v in values if hasattr(v, "get_seq_length")), None)
