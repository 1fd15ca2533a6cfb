"""`tasksup run CONFIG`: validate a config, load the model, compute (resuming), summarise, plot."""

from __future__ import annotations

import re
from pathlib import Path

from tasksup.config import apply_overrides, build_config, read_yaml, to_dict
from tasksup.errors import TasksupError
from tasksup.experiments import get_experiment
from tasksup.results import RunDir
from tasksup.tasks import load_task_file


def model_slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name.rstrip("/").split("/")[-1] or name) or "model"


def prepare(config_path: str | Path, *, model: str | None = None, overrides: list[str] | None = None):
    """Read, override and validate a config; returns (experiment module, config)."""
    path = Path(config_path)
    raw = apply_overrides(read_yaml(path), overrides or [])
    if model is not None:
        raw["model"] = model
    experiment = get_experiment(raw.get("experiment", "mixture"))
    cfg = build_config(experiment.Config, raw, source=path.name)
    for f in cfg.task_files:
        load_task_file(f)
    if hasattr(experiment, "check"):
        experiment.check(cfg)
    return experiment, cfg


def load_for(cfg):
    from tasksup.models import load_model

    if not cfg.model:
        raise TasksupError("no model given: pass --model or set `model:` in the config")
    return load_model(cfg.model, dtype=cfg.dtype, device=cfg.device, device_map=cfg.device_map,
                      batch_size=cfg.batch_size)


def run_config(config_path: str | Path, *, model: str | None = None, out: str | Path | None = None,
               overrides: list[str] | None = None, progress: bool = True) -> RunDir:
    experiment, cfg = prepare(config_path, model=model, overrides=overrides)
    lm = load_for(cfg)
    out = Path(out) if out else Path("results") / Path(config_path).stem / model_slug(cfg.model)
    run_dir = RunDir(out, to_dict(cfg), seed=cfg.seed, model=lm.identity())
    experiment.run(cfg, lm, run_dir, progress)
    finish(experiment, cfg, run_dir)
    return run_dir


def finish(experiment, cfg, run_dir: RunDir) -> None:
    records = run_dir.records()
    summary, rows = experiment.summarize(records, cfg)
    run_dir.write_summary(summary, rows)
    experiment.plot(records, summary, cfg, run_dir.path)
