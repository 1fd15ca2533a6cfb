"""Resume state without pickle: optimizer tensors and RNG states in safetensors, the rest in JSON.

(accelerate's ``save_state`` pickles parts of the state, and ``torch.load`` of an optimizer state
would unpickle; neither is used.) The model itself is saved with ``save_pretrained`` next to
this state, so the training directory always holds a loadable model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tasksup.errors import TasksupError

STATE_DIR = "resume"
TENSORS, META = "optimizer.safetensors", "state.json"


def save_state(path: Path, optimizer, scheduler, meta: dict) -> None:
    """Write optimizer tensors, scheduler, RNG states and ``meta`` (step, elapsed time...) atomically."""
    opt = optimizer.state_dict()
    tensors = {f"opt.{pid}.{name}": t.detach().cpu().contiguous()
               for pid, entries in opt["state"].items() for name, t in entries.items()}
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    info = dict(meta, param_groups=opt["param_groups"], scheduler=scheduler.state_dict())
    tmp = path.with_name(path.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(tmp / TENSORS))
    (tmp / META).write_text(json.dumps(info, indent=1) + "\n")
    if path.exists():
        for f in path.iterdir():
            f.unlink()
        path.rmdir()
    os.replace(tmp, path)


def has_state(path: Path) -> bool:
    return (path / TENSORS).is_file() and (path / META).is_file()


def load_state(path: Path, optimizer, scheduler) -> dict:
    """Restore optimizer, scheduler and RNG states in place; returns the saved ``meta``."""
    if not has_state(path):
        raise TasksupError(f"no resume state in {path}")
    info = json.loads((path / META).read_text())
    tensors = load_file(str(path / TENSORS))
    state: dict = {}
    for key, t in tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = t
    optimizer.load_state_dict({"state": state, "param_groups": info.pop("param_groups")})  # moves to the params' device
    scheduler.load_state_dict(info.pop("scheduler"))
    torch.set_rng_state(tensors["rng.torch"])
    if torch.cuda.is_available():
        cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    return info
