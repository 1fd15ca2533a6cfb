"""Load any causal LM (a local Hugging Face directory or a hub id) into a :class:`LanguageModel`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from tasksup.errors import TasksupError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Tokenizer classes that mean "the tokenizer.json in this folder is the tokenizer": transformers 5
# otherwise rebuilds some tokenizers from the model type (Qwen2) and ignores the saved one.
SAVED_FAST_CLASSES = {"TokenizersBackend", "PreTrainedTokenizerFast"}


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or os.sep + os.sep in name


def load_tokenizer(source: str, *, gguf_file: str | None = None, trust_remote_code: bool = False):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    cfg = Path(source) / "tokenizer_config.json"
    if gguf_file is None and cfg.is_file() and (Path(source) / "tokenizer.json").is_file():
        if json.loads(cfg.read_text()).get("tokenizer_class") in SAVED_FAST_CLASSES:
            return PreTrainedTokenizerFast.from_pretrained(source)
    return AutoTokenizer.from_pretrained(source, gguf_file=gguf_file, trust_remote_code=trust_remote_code)


def load_model(name_or_path: str, *, dtype: str | None = None, device: str | None = None,
               device_map: str | None = None, batch_size: int = 8, gguf_file: str | None = None,
               trust_remote_code: bool = False, **remote):
    """A causal LM and its tokenizer, wrapped for scoring.

    ``name_or_path``: a local directory (ours or any Hugging Face causal LM) or a hub id.
    ``dtype``: ``float32`` (default: exact on CPU), ``bfloat16`` or ``float16``.
    ``device``: ``cpu``/``cuda``/... (default: CUDA when available); ``device_map="auto"`` instead
    spreads a model too large for one device over all of them (accelerate).
    ``openai:MODEL``: a model behind an OpenAI-compatible server; ``remote`` takes ``base_url`` and
    the settings of :func:`tasksup.models.remote.load_remote_model` (docs/remote.md).
    """
    from transformers import AutoModelForCausalLM

    from tasksup.models.wrapper import LanguageModel

    name = str(name_or_path)
    if name.startswith("openai:"):
        from tasksup.models.remote import load_remote_model

        return load_remote_model(name, batch_size=batch_size, **remote)
    if remote:
        raise TasksupError(f"{', '.join(sorted(remote))}: settings of openai:MODEL models only")
    expanded = os.path.expanduser(name)
    if os.path.exists(expanded):
        if not os.path.isdir(expanded):
            raise TasksupError(f"model path {name!r} is not a directory")
        if gguf_file is None and not os.path.isfile(os.path.join(expanded, "config.json")):
            raise TasksupError(f"model directory {name!r} has no config.json (not a Hugging Face model folder)")
        source = expanded
    elif _looks_like_path(name):
        raise TasksupError(f"model directory {name!r} does not exist")
    else:
        source = name  # a hub id; works offline only if it is in the local HF cache
    if dtype is not None and dtype not in DTYPES:
        raise TasksupError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    torch_dtype = DTYPES[dtype or "float32"]
    try:
        tokenizer = load_tokenizer(source, gguf_file=gguf_file, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=torch_dtype, device_map=device_map, gguf_file=gguf_file, trust_remote_code=trust_remote_code
        )
    except TasksupError:
        raise
    except Exception as e:  # corrupt weights, missing files, offline hub, unknown architecture ...
        raise TasksupError(f"could not load model {name!r}: {_first_line(e)}") from None
    if device_map is None:
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model.to(device)
    model.eval()
    return LanguageModel(model, tokenizer, name=name, batch_size=batch_size, gguf_file=gguf_file)
