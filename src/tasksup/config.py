"""YAML configs: load, override from the command line (``--set key=value``), validate into dataclasses.

Every experiment declares a dataclass of its settings with documented defaults; a config file may
set any of them and nothing else (an unknown key is an error naming the known ones).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from tasksup.errors import TasksupError


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise TasksupError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise TasksupError(f"config file {str(path)!r} is not valid YAML: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TasksupError(f"config file {str(path)!r} must hold a mapping of settings")
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


def build_config(cls: type, raw: dict, source: str = "config"):
    """Validate ``raw`` against the dataclass ``cls``: unknown keys and wrong types are one-line errors."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise TasksupError(f"{source}: unknown config key {unknown[0]!r} (known: {', '.join(sorted(fields))})")
    hints = typing.get_type_hints(cls)
    for key, value in raw.items():
        if not _matches(value, hints[key]):
            hint = str(hints[key]).replace("typing.", "")
            raise TasksupError(f"{source}: {key} = {value!r} is not of type {hint}")
    try:
        return cls(**raw)
    except TasksupError:
        raise
    except (TypeError, ValueError) as e:
        raise TasksupError(f"{source}: {e}") from None


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)
