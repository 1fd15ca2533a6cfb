"""Load any causal LM (a local Hugging Face directory or a hub id) into a :class:`LanguageModel`.

torch and transformers are imported once the model's name and folder are checked: a wrong path is
reported at once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tasksup.errors import TasksupError

DTYPES = ("float32", "bfloat16", "float16")  # names of torch dtypes
# Tokenizer classes that mean "the tokenizer.json in this folder is the tokenizer": transformers 5
# otherwise rebuilds some tokenizers from the model type (Qwen2) and ignores the saved one.
SAVED_FAST_CLASSES = {"TokenizersBackend", "PreTrainedTokenizerFast"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def _looks_like_path(name: str) -> bool:
    """A local path, not a hub id: explicit, deeper than org/name, or under an existing local folder."""
    parent = os.path.dirname(os.path.expanduser(name))
    return (name.startswith(("/", ".", "~")) or name.count("/") > 1 or os.sep + os.sep in name
            or (parent != "" and os.path.isdir(parent)))


def check_model_dir(path: str, name: str) -> None:
    """One-line errors for a local model folder that cannot load: no or invalid config.json, no tokenizer
    (transformers would otherwise build an unrelated tokenizer from the model type), no weights."""
    config = Path(path) / "config.json"
    if not config.is_file() and (Path(path) / "train_config.yaml").is_file() and \
            not any((Path(path) / f).is_file() for f in WEIGHT_FILES):
        raise TasksupError(f"{name!r} is a training recipe kept without its weights (config and log only); re-make "
                           f"it with: tasksup train {Path(name) / 'train_config.yaml'} --out {name}")
    if not config.is_file():
        raise TasksupError(f"model directory {name!r} has no config.json (not a Hugging Face model folder)")
    try:
        if not isinstance(json.loads(config.read_text(encoding="utf-8")), dict):
            raise ValueError("not a JSON object")
    except (UnicodeDecodeError, ValueError) as e:
        raise TasksupError(f"model directory {name!r}: config.json is not a valid JSON object ({e})") from None
    if not any((Path(path) / f).is_file() for f in TOKENIZER_FILES):
        raise TasksupError(f"model directory {name!r} has no tokenizer (none of {', '.join(TOKENIZER_FILES)})")
    if not any((Path(path) / f).is_file() for f in WEIGHT_FILES):
        raise TasksupError(f"model directory {name!r} has no weights (none of {', '.join(WEIGHT_FILES)})")


def check_hub_id(name: str) -> None:
    """A hub id must be in the local Hugging Face cache or on a reachable hub. Asked first, so that a mistyped
    folder name fails in one line, not after transformers' ~50 s of retries."""
    import huggingface_hub as hub
    from huggingface_hub import constants, errors

    if isinstance(hub.try_to_load_from_cache(name, "config.json"), str):
        return
    where = f"no folder {name!r} here, and no hub id {name!r} in the Hugging Face cache"
    if constants.is_offline_mode():
        raise TasksupError(f"model {name!r}: {where} (HF_HUB_OFFLINE is set)")
    try:
        hub.model_info(name, timeout=10)
    except errors.GatedRepoError:
        return  # a token may open it: the download says
    except (errors.RepositoryNotFoundError, errors.HFValidationError):
        raise TasksupError(f"model {name!r}: {where}, nor on the hub") from None
    except Exception as e:  # no network (this check is then immediate with HF_HUB_OFFLINE=1)
        raise TasksupError(f"model {name!r}: {where}, and the hub cannot be reached ({_first_line(e)}); "
                           "HF_HUB_OFFLINE=1 skips the hub") from None


def _checked_device(device: str) -> str:
    import torch

    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        raise TasksupError(f"device {device!r} is not a torch device (cpu, cuda, cuda:1, mps, ...)") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise TasksupError(f"device {device!r}: CUDA is not available on this machine")
    return device


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
        if gguf_file is None:
            check_model_dir(expanded, name)
        source = expanded
    elif _looks_like_path(name):
        raise TasksupError(f"model directory {name!r} does not exist")
    else:
        check_hub_id(name)
        source = name
    if dtype is not None and dtype not in DTYPES:
        raise TasksupError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")

    import torch
    from transformers import AutoModelForCausalLM

    from tasksup.models.wrapper import LanguageModel

    torch_dtype = getattr(torch, dtype or "float32")
    if device_map is None:
        device = _checked_device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        tokenizer = load_tokenizer(source, gguf_file=gguf_file, trust_remote_code=trust_remote_code)
        model, info = AutoModelForCausalLM.from_pretrained(
            source, dtype=torch_dtype, device_map=device_map, gguf_file=gguf_file, trust_remote_code=trust_remote_code,
            output_loading_info=True,
        )
    except TasksupError:
        raise
    except Exception as e:  # corrupt weights, missing files, offline hub, unknown architecture ...
        raise TasksupError(f"could not load model {name!r}: {_first_line(e)}") from None
    missing = sorted(info["missing_keys"])
    if missing:  # transformers initialises them at random and only warns
        raise TasksupError(f"model {name!r}: its weights lack {len(missing)} of the model's tensors ({missing[0]}, ...)")
    if device_map is None:
        model.to(device)
    model.eval()
    return LanguageModel(model, tokenizer, name=name, batch_size=batch_size, gguf_file=gguf_file)
