"""One module per experiment (paper figure), each driven by a YAML config.

An experiment module defines:

- ``Config``: a dataclass of its settings (subclassing :class:`CommonConfig`), documented defaults;
- ``check(cfg)``: validate what can be validated before a model is loaded (optional);
- ``run(cfg, lm, run_dir, progress)``: compute and append per-prompt records, skipping done ones;
- ``summarize(records, cfg) -> (summary_dict, csv_rows)``;
- ``plot(records, summary, cfg, out_dir) -> list of written paths``.

A module with ``MULTI_MODEL = True`` compares a family of models (``--models A B ...``; its Config
has ``models: list[str]``): the runner calls ``run``/``summarize``/``plot`` once per model, each in
its own run directory ``<out>/<model>``, then ``summarize_models(members, cfg)`` and
``plot_models(summary, cfg, out_dir)`` once (``members``: ``[{"name", "path", "identity", "summary"}]``).
It may define ``member_slug(name)``, each model's folder name under ``<out>`` (default
:func:`tasksup.runner.model_slug`, the model folder's own name).

The config's ``experiment:`` key picks the module (default ``mixture``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from tasksup.config import check_fields
from tasksup.errors import TasksupError

EXPERIMENTS = {
    "mixture": "tasksup.experiments.mixture",
    "scaling": "tasksup.experiments.scaling",
    "collapse": "tasksup.experiments.collapse",
    "lambda_sweep": "tasksup.experiments.lambda_sweep",
    "emergence": "tasksup.experiments.emergence",
    "task_vectors": "tasksup.experiments.task_vectors",
    "vector_patching": "tasksup.experiments.vector_patching",
}


@dataclass
class CommonConfig:
    """Settings every experiment shares."""

    experiment: str = "mixture"
    model: str | None = None  # HF directory or hub id, or openai:NAME (a server); `--model` overrides it
    base_url: str | None = None  # openai:NAME models: the server, e.g. http://127.0.0.1:8000/v1; `--base-url`
    remote: dict | None = None  # openai:NAME models: RemoteSettings (docs/remote.md)
    seed: int = 0  # prompt i is drawn from numpy's default_rng([seed, i]): reproducible and resumable
    dtype: str = "float32"  # float32 (exact on CPU) | bfloat16 | float16
    device: str | None = None  # default: cuda when available, else cpu
    device_map: str | None = None  # "auto": spread a large model over the available devices (accelerate)
    batch_size: int = 8  # prompts scored in one batched forward pass
    task_files: list[str] = field(default_factory=list)  # YAML files declaring extra tasks (tasks/declared.py)

    def __post_init__(self):
        check_fields(self)  # every numeric setting in its range (config.RANGES), however the config was made


def model_name(model: str | None) -> str:
    """A model as figure titles name it: a checkpoint folder by its own name (``checkpoints/plus-small`` ->
    ``plus-small``), a training snapshot with its run (``runs/ret/snapshots/step-002000`` ->
    ``ret/step-002000``), a hub id by its repository name, ``openai:NAME`` as it is."""
    if not model:
        return "model"
    if model.startswith("openai:"):
        return model
    path = PurePosixPath(model.replace("\\", "/").rstrip("/"))
    if path.parent.name == "snapshots" and path.parent.parent.name:
        return f"{path.parent.parent.name}/{path.name}"
    return path.name or model


def get_experiment(name: str):
    if name not in EXPERIMENTS:
        raise TasksupError(f"unknown experiment {name!r} (known: {', '.join(sorted(EXPERIMENTS))})")
    return importlib.import_module(EXPERIMENTS[name])
