"""`tasksup run CONFIG`: validate a config, load the model, compute (resuming), summarise, plot."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path

from tasksup.config import apply_overrides, build_config, read_yaml, to_dict
from tasksup.errors import Interrupted, TasksupError
from tasksup.experiments import get_experiment
from tasksup.logs import logged_to
from tasksup.results import (PACKED, RECORDS, RESUMABLE_KEYS, RunDir, config_changes, git_commit, records_file,
                             write_summary_files)
from tasksup.tasks import load_task_file


CHECKPOINT_FILE = "checkpoint.json"  # a family member's model as the experiment describes it (size, training position)
LOG_FILE = "warnings.log"  # third-party warnings of the run (kept off the terminal; see tasksup.logs)


def model_slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name.rstrip("/").split("/")[-1] or name) or "model"


def prepare(config_path: str | Path, *, model: str | None = None, overrides: list[str] | None = None,
            base_url: str | None = None):
    """Read, override and validate a config; returns (experiment module, config)."""
    path = Path(config_path)
    raw = apply_overrides(read_yaml(path), overrides or [])
    if model is not None:
        raw["model"] = model
    if base_url is not None:
        raw["base_url"] = base_url
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
    if cfg.model.startswith("openai:"):
        return load_model(cfg.model, batch_size=cfg.batch_size, base_url=cfg.base_url, **(cfg.remote or {}))
    if cfg.base_url or cfg.remote:
        raise TasksupError("base_url and remote settings are for openai:NAME models only")
    return load_model(cfg.model, dtype=cfg.dtype, device=cfg.device, device_map=cfg.device_map,
                      batch_size=cfg.batch_size)


def run_config(config_path: str | Path, *, model: str | None = None, models: list[str] | None = None,
               out: str | Path | None = None, overrides: list[str] | None = None, progress: bool = True,
               base_url: str | None = None) -> RunDir:
    experiment, cfg = prepare(config_path, model=model, overrides=overrides, base_url=base_url)
    default_out = Path("results") / Path(config_path).stem
    if getattr(experiment, "MULTI_MODEL", False):
        return run_family(experiment, cfg, models, Path(out) if out else default_out, progress)
    if models:
        if len(models) > 1:
            raise TasksupError(f"experiment {cfg.experiment!r} takes one model; use --model")
        cfg = dataclasses.replace(cfg, model=models[0])
    return run_model(experiment, cfg, Path(out) if out else default_out / model_slug(cfg.model or ""), progress)


def run_model(experiment, cfg, out: Path, progress: bool = True) -> RunDir:
    """Load ``cfg.model``, compute what ``out`` lacks, summarise and plot there."""
    lm = load_for(cfg)
    layout = getattr(experiment, "LAYOUT_KEYS", set())  # keys that decide which prompt each index holds
    run_dir = RunDir(out, to_dict(cfg), seed=cfg.seed, model=lm.identity(), resumable=RESUMABLE_KEYS - layout)
    with logged_to(run_dir.path / LOG_FILE):
        try:
            experiment.run(cfg, lm, run_dir, progress)
        except KeyboardInterrupt:
            total = getattr(experiment, "n_records", lambda c: c.n_prompts)(cfg)
            raise Interrupted(f"interrupted after {len(run_dir.records())}/{total} prompts ({run_dir.path}); "
                              "re-run the same command to resume") from None
        finally:  # remote models: requests/tokens of this invocation, also when it stopped on an error; an
            # invocation that sent nothing and appended nothing changes no file
            if hasattr(lm, "usage") and (run_dir.appended or lm.usage()["requests"]):
                run_dir.log_remote_usage(lm.usage())
        finish(experiment, cfg, run_dir, remote_usage=lm.usage() if hasattr(lm, "usage") else None)
    return run_dir


def finish(experiment, cfg, run_dir: RunDir, remote_usage: dict | None = None) -> None:
    """Summarise and plot, unless this invocation computed nothing for a folder already summarised (then no file
    changes; ``tasksup summarize`` remakes a summary on purpose)."""
    if not run_dir.appended and (run_dir.path / "summary.json").is_file():
        return
    records = run_dir.records()
    summary, rows = experiment.summarize(records, cfg)
    if remote_usage is not None:
        summary["remote_usage"] = remote_usage  # this invocation; run.json keeps one entry per invocation
    run_dir.write_summary(summary, rows)
    experiment.plot(records, summary, cfg, run_dir.path)


def kept_member(experiment, cfg, path: Path) -> Path | None:
    """The results folder of a model that is gone from disk (a training run not kept), if its results are
    complete for ``cfg`` and describe the model (``CHECKPOINT_FILE``): a family figure can then grow over
    sessions. Experiments opt in with ``describe_model(name)`` and ``n_records(cfg)``; else None.
    """
    if Path(cfg.model).exists() or not hasattr(experiment, "describe_model"):
        return None
    files = [path / f for f in ("config.json", "run.json", "summary.json", CHECKPOINT_FILE)] + [records_file(path)]
    if not all(f.is_file() for f in files):
        return None
    if config_changes(json.loads(files[0].read_text()), to_dict(cfg), RESUMABLE_KEYS - {"n_prompts"}):
        return None
    if len(RunDir.read_records(files[-1])) != experiment.n_records(cfg):
        return None
    print(f"{cfg.model}: not on disk; its complete results in {path} are kept")
    return path


def member_entry(name: str, path: Path) -> dict:
    """A family member as ``summarize_models`` reads it: its name, folder, identity, summary, checkpoint facts."""
    checkpoint = path / CHECKPOINT_FILE
    return {"name": name, "path": str(path), "identity": json.loads((path / "run.json").read_text())["model"],
            "summary": json.loads((path / "summary.json").read_text()),
            "checkpoint": json.loads(checkpoint.read_text()) if checkpoint.is_file() else None}


def run_family(experiment, cfg, models: list[str] | None, out: Path, progress: bool = True) -> RunDir:
    """A ``MULTI_MODEL`` experiment: every model in its own resumable run directory ``out/<model>``
    (config with ``model`` set and ``models`` empty), then the family's summary and figures in ``out``.

    Models: ``models`` (``--models``), else the config's ``models``, else its ``model`` alone.
    """
    names = list(models or cfg.models or ([cfg.model] if cfg.model else []))
    if not names:
        raise TasksupError("no models given: pass --models A B ... (smallest first) or set `models:` in the config")
    slugs = [getattr(experiment, "member_slug", model_slug)(n) for n in names]
    for i, slug in enumerate(slugs):
        if slug in slugs[:i]:
            raise TasksupError(f"models {names[slugs.index(slug)]!r} and {names[i]!r} would share the results folder "
                               f"{slug!r}: give them folders with distinct names")
    members, computed = [], 0
    for name, slug in zip(names, slugs):
        member_cfg = dataclasses.replace(cfg, model=name, models=[])
        path = kept_member(experiment, member_cfg, out / slug)
        if path is None:
            member = run_model(experiment, member_cfg, out / slug, progress)
            path, computed = member.path, computed + member.appended
            if hasattr(experiment, "describe_model"):
                (path / CHECKPOINT_FILE).write_text(json.dumps(experiment.describe_model(name), indent=2) + "\n")
        members.append(member_entry(name, path))
    family = dataclasses.replace(cfg, model=None, models=names)
    top = RunDir(out, to_dict(family), seed=cfg.seed, model={"family": [m["identity"] for m in members]}, record=False)
    old = out / "config.json"
    if (not computed and (out / "summary.json").is_file() and old.is_file()
            and json.loads(old.read_text()) == json.loads(json.dumps(to_dict(family)))):
        return top  # nothing new in any member: the family's files stay as they are
    top.record_segment()
    summary, rows = experiment.summarize_models(members, family)
    top.write_summary(summary, rows)
    experiment.plot_models(summary, family, out)
    return top


def headline(path: Path) -> str:
    """The figure's numbers in one line (an experiment's ``headline(summary)``), or "" if it has none."""
    experiment = get_experiment(json.loads((path / "config.json").read_text()).get("experiment", "mixture"))
    if not hasattr(experiment, "headline") or not (path / "summary.json").is_file():
        return ""
    return experiment.headline(json.loads((path / "summary.json").read_text()))


def is_family(path: Path) -> bool:
    """A family's folder (a ``MULTI_MODEL`` experiment): its config, summary and members, no records of its own."""
    cfg = path / "config.json"
    return (cfg.is_file() and (path / "summary.json").is_file() and not records_file(path).is_file()
            and getattr(get_experiment(json.loads(cfg.read_text()).get("experiment", "mixture")), "MULTI_MODEL", False))


def result_folders(paths: list[str | Path], families: bool = False) -> list[Path]:
    """The run folders in ``paths``: a path holding ``config.json`` and ``results.jsonl`` (or its packed ``.gz``)
    itself, else every folder below it that does (sorted); with ``families``, also the family folders among
    them, each after its members."""
    found = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise TasksupError(f"{p} is not a folder")
        here = [p] if (p / "config.json").is_file() and records_file(p).is_file() else \
            sorted({f.parent for f in p.rglob("results.jsonl*")
                    if f.name in (RECORDS, PACKED) and (f.parent / "config.json").is_file()})
        if families:
            here += sorted((f.parent for f in [p / "config.json", *p.rglob("*/config.json")] if is_family(f.parent)),
                           key=lambda f: -len(f.parts))
        if not here:
            raise TasksupError(f"{p} holds no results folder (config.json and results.jsonl)")
        found += [f for f in here if f not in found]
    return found


def resummarize(path: str | Path) -> list[Path]:
    """Summarise and plot a results folder again from its ``config.json`` and ``results.jsonl``: no model is
    loaded and nothing is scored, so a summary or figure that changed with the code can be remade for
    results whose model has changed or is gone. Rewrites summary.json / summary.csv and the figures (a
    remote run's ``remote_usage`` is kept) and records when, and by which commit, in run.json's
    ``resummarized``. Returns the figure paths. A family's folder (``MULTI_MODEL``) is summarised from its
    members' summaries (summarise the members first: ``result_folders(..., families=True)`` orders them so).
    """
    path = Path(path)
    cfg_file = path / "config.json"
    raw = json.loads(cfg_file.read_text())
    experiment = get_experiment(raw.get("experiment", "mixture"))
    known = {f.name for f in dataclasses.fields(experiment.Config)}
    cfg = build_config(experiment.Config, {k: v for k, v in raw.items() if k in known}, source=str(cfg_file))
    if is_family(path):  # from its members' summaries
        slug = getattr(experiment, "member_slug", model_slug)
        missing = [n for n in cfg.models if not (path / slug(n) / "summary.json").is_file()]
        if missing:
            raise TasksupError(f"{path}: the family's member {missing[0]!r} has no summary in {path / slug(missing[0])}")
        summary, rows = experiment.summarize_models([member_entry(n, path / slug(n)) for n in cfg.models], cfg)
        write_summary_files(path, summary, rows)
        _record_resummarized(path)
        return list(experiment.plot_models(summary, cfg, path))
    for f in cfg.task_files:
        load_task_file(f)
    try:
        records = RunDir.read_records(records_file(path))
    except json.JSONDecodeError:
        raise TasksupError(f"{path}/results.jsonl has a line cut short (an interrupted run): resume it with "
                           "`tasksup run` first") from None
    if not records:
        raise TasksupError(f"{path}/results.jsonl holds no records")
    summary, rows = experiment.summarize(records, cfg)
    old = path / "summary.json"
    if old.is_file() and "remote_usage" in (previous := json.loads(old.read_text())):
        summary["remote_usage"] = previous["remote_usage"]
    write_summary_files(path, summary, rows)
    _record_resummarized(path)
    return list(experiment.plot(records, summary, cfg, path))


def _record_resummarized(path: Path) -> None:
    meta_file = path / "run.json"
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        meta["resummarized"] = {"at": time.strftime("%Y-%m-%dT%H:%M:%S"), "git_commit": git_commit()}
        meta_file.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def refingerprint(path: str | Path, loaded: dict | None = None) -> str:
    """Verify a results folder's older model fingerprint against the checkpoint its ``config.json`` names, and
    record the current kind (``models.wrapper.fingerprint``) in its run.json, with the old one under
    ``refingerprinted``. Returns "upgraded" or "already current"; a one-line error where the checkpoint is not a
    local folder or no longer matches (then the folder is left as it is and accepts no new rows). ``loaded``:
    path -> loaded model, reused across folders."""
    from importlib.metadata import version

    from tasksup.models import load_model
    from tasksup.models.wrapper import fingerprint
    from tasksup.results import MODEL_FINGERPRINT, PATH_FINGERPRINT

    path = Path(path)
    meta_file = path / "run.json"
    if not meta_file.is_file():
        raise TasksupError(f"{path} has no run.json")
    meta = json.loads(meta_file.read_text())
    was = (meta.get("model") or {}).get("fingerprint") or ""
    if was.startswith(MODEL_FINGERPRINT):
        return "already current"
    if not was:
        raise TasksupError(f"{path}: run.json records no model fingerprint to verify")
    local = json.loads((path / "config.json").read_text()).get("model") or ""
    if not Path(local).expanduser().is_dir():
        raise TasksupError(f"{path}: the model it names ({local!r}) is not a local folder here, so its fingerprint "
                           "cannot be verified")
    loaded = {} if loaded is None else loaded
    if local not in loaded:
        loaded[local] = load_model(local).model.config.to_dict()
    config = dict(loaded[local], _name_or_path=meta["model"].get("name", local))  # the path the run loaded
    kind = PATH_FINGERPRINT if was.startswith(PATH_FINGERPRINT) else ""
    if fingerprint(config, local, kind) != was:
        then, now = (meta.get("versions") or {}).get("transformers"), version("transformers")
        why = "retrained or replaced since" + (f", or its config reads differently under transformers {now} than "
                                                f"under {then}, which the run used" if then != now else "")
        raise TasksupError(f"{path}: {local} does not match the fingerprint {was} its results were computed with "
                           f"({why}); left as it is: re-run into another --out")
    meta["model"]["fingerprint"] = fingerprint(config, local)
    meta.setdefault("refingerprinted", []).append({"at": time.strftime("%Y-%m-%dT%H:%M:%S"), "from": was,
                                                    "model": local, "git_commit": git_commit()})
    meta_file.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return "upgraded"
