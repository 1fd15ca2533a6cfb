"""YAML configs: load, override from the command line (``--set key=value``), validate into dataclasses.

Every experiment declares a dataclass of its settings with documented defaults; a config file may
set any of them and nothing else (an unknown key is an error naming the known ones). Every numeric
setting has its allowed range in :data:`RANGES`, checked in one place (:func:`check_value`) for
config files, ``--set`` overrides and command-line options alike.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from tasksup.errors import TasksupError

# Allowed values of every numeric setting, by name: those of the experiment configs, TrainConfig, the
# theory settings and the command-line options (a list setting has each element checked). Interval
# notation: "[1, inf)" is >= 1, "(0, 1)" excludes both ends. Cross-setting rules stay in check()/validate().
RANGES = {
    # experiments (CommonConfig and every experiment's Config)
    "seed": "[0, 4294967295]", "batch_size": "[1, inf)", "n_examples": "[1, inf)", "n_prompts": "[1, inf)",
    "top_k": "[0, inf)", "top_max_tokens": "[1, inf)", "max_tokens": "[1, inf)", "n_samples": "[1, inf)",
    "temperature": "(0, inf)", "n_turns": "[1, inf)", "bootstrap_resamples": "[1, inf)", "confidence": "(0, 1)",
    "lambdas": "[0, 1]", "n_queries": "[1, inf)", "layer": "[0, inf)", "fv_heads": "[1, inf)",
    "fv_prompts": "[1, inf)", "top1_max_tokens": "[1, inf)", "top1_max_nodes": "[1, inf)",
    # training (TrainConfig)
    "n_layer": "[1, inf)", "n_head": "[1, inf)", "n_embd": "[1, inf)", "n_positions": "[1, inf)",
    "dropout": "[0, 1)", "init_std": "(0, inf)", "steps": "[1, inf)", "lr": "(0, inf)", "weight_decay": "[0, inf)",
    "adam_betas": "[0, 1)", "warmup_steps": "[0, inf)", "grad_clip": "(0, inf)", "cpu_threads": "[0, inf)",
    "log_every": "[1, inf)", "eval_every": "[0, inf)", "eval_examples": "[1, inf)", "eval_prompts": "[0, inf)",
    "final_eval_prompts": "[0, inf)", "save_every": "[0, inf)", "snapshot_every": "[0, inf)",
    "stop_after": "[1, inf)", "sequence_chars": "[0, inf)", "task_weights": "(0, inf)",
    "vocab_size": "[1, inf)", "bpe_digits": "[1, inf)", "example_noise": "[0, 1)",
    "task_noise": "[0, 1)", "example_dropout": "[0, 1)", "mix_share": "[0, 1]", "mix_alpha": "(0, inf)",
    "mix_max_tasks": "[2, inf)", "mix_per_group": "[1, inf)",
    # theory verify (its YAML keys and options)
    "k_values": "[1, inf)", "m_values": "[1, inf)", "k": "[1, inf)", "m": "[1, inf)", "d": "[1, inf)",
    "n": "[3, inf)", "trials": "[1, inf)", "min_separation": "[0, inf)",
    # options of decode, bench and vectors commands
    "max_samples": "[1, inf)", "layers": "[1, inf)", "width": "[1, inf)", "prompt_tokens": "[1, inf)",
    "prompts": "[1, inf)", "repeats": "[1, inf)", "threads": "[1, inf)",
}
# Allowed values of string settings that no check() tests before a model is loaded.
CHOICES = {
    "order": ("random", "blocked"),
    "tokenization": ("in_context", "separate"),
    "dtype": ("float32", "bfloat16", "float16"),
}


def _bounds(interval: str) -> tuple[str, float, float, str]:
    low_bracket, low, high, high_bracket = re.fullmatch(r"([\[(])(.+), (.+)([\])])", interval).groups()
    return low_bracket, float(low), float(high), high_bracket


def _allowed(interval: str) -> str:
    """``[1, inf)`` -> ``>= 1``; ``(0, 1)`` stays as it is."""
    low_bracket, low, high, _ = _bounds(interval)
    if high == math.inf:
        return f"{'>=' if low_bracket == '[' else '>'} {low:g}"
    return f"in {interval}"


def _in_range(value: float, interval: str) -> bool:
    low_bracket, low, high, high_bracket = _bounds(interval)
    above = low <= value if low_bracket == "[" else low < value  # NaN is neither
    below = value <= high if high_bracket == "]" else value < high
    return above and below


def check_value(key: str, value: Any, label: str | None = None) -> None:
    """A one-line error unless ``value`` (a number, a list or dict of numbers, None) is allowed for the setting ``key``.

    ``label``: how the message names the setting (default ``key``; ``--n-prompts`` for an option).
    """
    label = label or key
    if key in CHOICES and isinstance(value, str) and value not in CHOICES[key]:
        raise TasksupError(f"{label} must be one of {', '.join(CHOICES[key])}, got {value!r}")
    if key not in RANGES:
        return
    values = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else [value]
    for v in values:
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not _in_range(v, RANGES[key]):
            numbers = " numbers" if v is not value else ""
            raise TasksupError(f"{label} must be{numbers} {_allowed(RANGES[key])}, got {value!r}")


def check_fields(cfg) -> None:
    """:func:`check_value` for every field of the dataclass instance ``cfg`` (its ``__post_init__``)."""
    for f in dataclasses.fields(cfg):
        check_value(f.name, getattr(cfg, f.name))


def check_options(**options: Any) -> None:
    """:func:`check_value` for command-line options, named as typed (``n_prompts`` -> ``--n-prompts``)."""
    for key, value in options.items():
        check_value(key, value, "--" + key.replace("_", "-"))


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (PyYAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        mapping = super().construct_mapping(node, deep=deep)
        if len(mapping) < len(node.value):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"the key {key!r} appears twice", key_node.start_mark)
                seen.add(key)
        return mapping


def read_text(path: str | Path, kind: str) -> str:
    """A UTF-8 text file's contents; ``kind`` names the file in the one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise TasksupError(f"{kind} {str(path)!r} " + ("is a directory" if path.is_dir() else "does not exist"))
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise TasksupError(f"{kind} {str(path)!r} is not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise TasksupError(f"{kind} {str(path)!r} cannot be read: {e.strerror}") from None


def read_yaml(path: str | Path, kind: str = "config file") -> dict:
    """The mapping a YAML file holds; ``kind`` names the file in errors (empty, not UTF-8, not a mapping ...)."""
    text = read_text(path, kind)
    path = Path(path)
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        where = f" (line {e.problem_mark.line + 1})" if getattr(e, "problem_mark", None) else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise TasksupError(f"{kind} {str(path)!r} is not valid YAML{where}: {problem}") from None
    if data is None:
        raise TasksupError(f"{kind} {str(path)!r} is empty: it must hold a mapping of settings")
    if not isinstance(data, dict):
        raise TasksupError(f"{kind} {str(path)!r} must hold a mapping of settings, not a {type(data).__name__}")
    return data


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """``key=value`` pairs (value parsed as YAML, so ``n_prompts=20`` is an int, ``mixture=[0.5,0.5]`` a list)."""
    out = dict(raw)
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise TasksupError(f"--set takes key=value, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise TasksupError(f"--set {item!r}: the value is not valid YAML") from None
    return out


def _matches(value: Any, hint: Any) -> bool:
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin in (list, tuple):
        args = typing.get_args(hint)
        return isinstance(value, (list, tuple)) and (not args or all(_matches(v, args[0]) for v in value))
    if origin is dict:
        return isinstance(value, dict)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def check_settings(raw: dict, hints: dict, source: str) -> None:
    """One-line errors for keys not in ``hints`` (name -> type), values not of their type, and values
    outside :data:`RANGES` / :data:`CHOICES`, each naming ``source`` and the key."""
    for key in raw:
        if key not in hints:
            close = difflib.get_close_matches(str(key), hints, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise TasksupError(f"{source}: unknown config key {key!r} ({hint}known: {', '.join(sorted(hints))})")
    for key, value in raw.items():
        if not _matches(value, hints[key]):
            raise TasksupError(f"{source}: {key} = {value!r} is not of type {_type_name(hints[key])}")
        try:
            check_value(key, value)
        except TasksupError as e:
            raise TasksupError(f"{source}: {e}") from None


def build_config(cls: type, raw: dict, source: str = "config"):
    """Validate ``raw`` against the dataclass ``cls`` (:func:`check_settings`) and build it."""
    hints = typing.get_type_hints(cls)
    check_settings(raw, {f.name: hints[f.name] for f in dataclasses.fields(cls)}, source)
    try:
        return cls(**raw)
    except (TasksupError, TypeError, ValueError) as e:
        raise TasksupError(f"{source}: {e}") from None


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)
