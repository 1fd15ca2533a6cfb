"""When does superposition emerge (§4, issue 12)? Averaging vs superposing across model size and training.

Shown a prompt mixing tasks A and B of an ordered family (ret2/ret6, plus2/plus6), a model may
*superpose* them (mass lambda and 1 - lambda on A's and B's answers) or *average* them (mass on the
answers of the tasks in between: plus3..plus5). For every checkpoint in ``models`` (snapshot
folders ``<run>/snapshots/step-NNNNNN`` of several runs) this scores, per prompt, every family
task's answer exactly and records :func:`tasksup.metrics.family_masses`; the family summary places
each checkpoint by its size and the training tokens it has seen, and draws one figure.

Prompts are Fig. 3's (:mod:`.lambda_sweep`): prompt i of lambda step j is record index
``j * n_prompts + i``, built by :func:`.mixture.build_prompt`, so with Fig. 3's ``lambdas`` they are
exactly its prompts. Training tokens = step x batch_size x the mean token length of the run's
training sequences (256 of them encoded as the run drew them; ret's are all one length). A model
folder that is not one of our training runs (no ``train_config.yaml`` in it or, for a snapshot,
two levels up) has unknown tokens: its CSV row leaves them empty and the figure draws it as a
horizontal reference line.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tasksup import metrics
from tasksup.errors import TasksupError
from tasksup.experiments import CommonConfig, lambda_sweep, mixture
from tasksup.runner import model_slug
from tasksup.tasks import PromptBuilder, all_families, check_fits, resolve_tasks
from tasksup.tasks.prompts import answers_collide

MULTI_MODEL = True
LAYOUT_KEYS = {"n_prompts"}  # prompt i of lambda j is index j * n_prompts + i: a resume may not change it
QUANTITIES = ("p_a", "p_b", "superposition_mass", "averaging_mass", "outside_mass")
SNAPSHOT = re.compile(r"step-(\d+)")
TOKEN_SAMPLE = 256  # training sequences encoded to measure a run's mean sequence length


@dataclass
class Config(CommonConfig):
    experiment: str = "emergence"
    models: list[str] = field(default_factory=list)  # checkpoint folders (e.g. <run>/snapshots/step-*); `--models`
    tasks: list[str] = field(default_factory=lambda: ["ret2", "ret6"])  # A (weight lambda), B: one ordered family
    lambdas: list[float] = field(default_factory=lambda: [0.5])
    n_examples: int = 10  # m, as Fig. 3
    n_prompts: int = 100  # per lambda
    order: str = "random"  # random | blocked
    delimiter: str = "\n"
    terminator: str | None = None  # appended to every answer when scoring (Fig. 3: none)
    tokenization: str = "in_context"  # in_context | separate (see scoring.py)
    bootstrap_resamples: int = 10_000  # BCa bootstrap intervals for every mean (seeded with `seed`)
    confidence: float = 0.95
    title: str = ""


def family_of(tasks: list[str]) -> list[str]:
    """The ordered family holding both tasks (its order defines 'between')."""
    for fam in all_families().values():
        if set(tasks) <= set(fam.tasks):
            return list(fam.tasks)
    raise TasksupError(f"tasks {tasks} do not belong to one task family: averaging needs the family's order")


def check(cfg: Config) -> None:
    lambda_sweep.check(cfg)
    family_of(cfg.tasks)
    if cfg.n_prompts < 2:
        raise TasksupError(f"n_prompts must be at least 2 (for a confidence interval), got {cfg.n_prompts}")
    if cfg.bootstrap_resamples < 100:
        raise TasksupError(f"bootstrap_resamples must be at least 100, got {cfg.bootstrap_resamples}")


def member_slug(name: str) -> str:
    """A checkpoint's results folder: ``<run>_step-NNNNNN`` for a snapshot (snapshots of different runs
    share their folder name), else the runner's slug."""
    path = Path(name).resolve()
    if SNAPSHOT.fullmatch(path.name) and len(path.parents) > 1:
        return model_slug(f"{path.parents[1].name}_{path.name}")
    return model_slug(name)


def run(cfg: Config, lm, run_dir, progress: bool = True) -> None:
    family = resolve_tasks(family_of(cfg.tasks))
    names = [t.name for t in family]
    a, b = names.index(cfg.tasks[0]), names.index(cfg.tasks[1])
    builder = PromptBuilder(resolve_tasks(cfg.tasks), cfg.delimiter)
    check_fits(lm, lambda k: ((p.text, [t.answer(p.query) for t in family])
                              for p in lambda_sweep.all_prompts(replace(cfg, n_examples=k), builder)),
               cfg.n_examples, terminator=cfg.terminator)
    total = n_records(cfg)
    done = run_dir.done()
    todo = [i for i in range(total) if i not in done]
    bar = tqdm(total=total, initial=total - len(todo), desc=f"{lm.name} prompts", disable=not progress)
    for start in range(0, len(todo), cfg.batch_size):
        idx = todo[start:start + cfg.batch_size]
        lams = [cfg.lambdas[i // cfg.n_prompts] for i in idx]
        prompts = [mixture.build_prompt(lambda_sweep.mixture_config(cfg, lam), builder, i) for i, lam in zip(idx, lams)]
        answers = [[t.answer(p.query) for t in family] for p in prompts]
        for i, ans in zip(idx, answers):
            if cfg.terminator is None and answers_collide(sorted(set(ans)), allow_prefixes=False):
                raise TasksupError(f"prompt {i}: one family answer is a prefix of another {ans}, so their "
                                   "probabilities overlap: set terminator: \"\\n\"")
        scores = lm.score([p.text for p in prompts], answers, cfg.terminator, cfg.tokenization)
        records = []
        for j, (i, lam, p, ans, lp) in enumerate(zip(idx, lams, prompts, answers, scores.logprobs)):
            probs = np.exp(lp)
            records.append({
                "index": i, "lambda": lam, "prompt": p.text, "tasks": p.tasks, "mixture": p.mixture,
                "counts": p.counts, "example_tasks": p.example_tasks, "answers": p.answers, "logprobs": [float(lp[a]), float(lp[b])],
                "probs": [float(probs[a]), float(probs[b])],
                "family": names, "family_answers": ans, "family_probs": probs.tolist(),
                **metrics.family_masses(ans, probs, a, b),
                "boundary_merge": scores.boundary_merge[j], "separate_differs": scores.separate_differs[j],
                "collision_resamples": p.collision_resamples, "leak_resamples": p.leak_resamples})
        run_dir.append(records)
        bar.update(len(idx))
    bar.close()


def summarize(records: list[dict], cfg: Config) -> tuple[dict, list[dict]]:
    """One model: per lambda, the mean of each quantity with its BCa interval, and each family answer's mean."""
    family = records[0]["family"]
    per_lambda, rows = [], []
    for lam in sorted({r["lambda"] for r in records}):
        rs = [r for r in records if r["lambda"] == lam]
        entry = {"lambda": lam, "n_prompts": len(rs)}
        for q in QUANTITIES:
            values = [r[q] for r in rs]
            entry[q] = {"mean": float(np.mean(values)),
                        **metrics.bootstrap_mean_ci(values, cfg.confidence, cfg.bootstrap_resamples, cfg.seed)}
            rows.append({"lambda": lam, "quantity": q, **entry[q]})
        entry["mean_family_probs"] = dict(zip(family, np.mean([r["family_probs"] for r in rs], axis=0).tolist()))
        entry["per_prompt"] = metrics.per_prompt_choice(rs)  # superposing within a prompt, or committing per prompt
        per_lambda.append(entry)
    summary = {"model": cfg.model, "tasks": records[0]["tasks"], "family": family, "confidence": cfg.confidence,
               "per_lambda": per_lambda, "collision_resamples": int(sum(r["collision_resamples"] for r in records))}
    return summary, rows


def plot(records: list[dict], summary: dict, cfg: Config, out_dir) -> list:
    """No figure per model: the family's figure (:func:`plot_models`) shows every checkpoint."""
    return []


def training_position(model: str) -> dict:
    """The run a checkpoint folder belongs to, the step it was saved at and the tokens seen by then.

    A snapshot ``<run>/snapshots/step-NNNNNN`` has its step in its name; a run folder itself, the
    step of ``train_summary.json`` (finished) or of its resume state (in progress). Not one of our
    runs: every value None.
    """
    from tasksup.train.loop import CONFIG_FILE, SNAPSHOT_DIR
    from tasksup.train.state import META, STATE_DIR

    path = Path(model)
    found = SNAPSHOT.fullmatch(path.name)
    if found and path.parent.name == SNAPSHOT_DIR and (path.parents[1] / CONFIG_FILE).is_file():
        folder, step = path.parents[1], int(found.group(1))
    elif (path / "train_summary.json").is_file() and (path / CONFIG_FILE).is_file():
        folder, step = path, json.loads((path / "train_summary.json").read_text())["steps"]
    elif (path / STATE_DIR / META).is_file() and (path / CONFIG_FILE).is_file():
        folder, step = path, json.loads((path / STATE_DIR / META).read_text())["step"]
    else:
        return {"run": None, "step": None, "batch_size": None, "tokens_per_sequence": None, "tokens": None,
                "tokenization": None}
    batch_size, per_sequence, tokenization = run_data(folder)
    return {"run": str(folder), "step": step, "batch_size": batch_size, "tokens_per_sequence": per_sequence,
            "tokens": round(step * batch_size * per_sequence), "tokenization": tokenization}


def tokenization_of(cfg) -> str:
    """How a training run's tokenizer reads its examples, the phase diagram's third axis (docs/superposition_emergence.md):
    one token per character, or BPE with numbers of up to ``bpe_digits`` digits as one token."""
    if cfg.tokenizer == "char":
        return "characters"
    return "BPE, digit by digit" if cfg.bpe_digits == 1 else f"BPE, numbers whole (<= {cfg.bpe_digits} digits)"


def run_data(folder: Path) -> tuple[int, float, str]:
    """A training run's batch size, the mean token length of its training sequences and its tokenization."""
    from transformers import PreTrainedTokenizerFast

    from tasksup.train import load_train_config
    from tasksup.train.data import SequenceSource
    from tasksup.train.loop import CONFIG_FILE

    cfg = load_train_config(folder / CONFIG_FILE)
    source = SequenceSource.from_config(cfg, resolve_tasks(cfg.tasks, one_space=False),
                                        PreTrainedTokenizerFast.from_pretrained(folder))
    return (cfg.batch_size, float(np.mean([len(ids) for ids, _ in source.encode(0, range(TOKEN_SAMPLE))])),
            tokenization_of(cfg))


def model_shape(model: str) -> dict:
    """Layers and width from the checkpoint's config.json (None where there is none)."""
    path = Path(model) / "config.json"
    c = json.loads(path.read_text()) if path.is_file() else {}
    return {"n_layer": c.get("n_layer", c.get("num_hidden_layers")), "n_embd": c.get("n_embd", c.get("hidden_size"))}


def describe_model(model: str) -> dict:
    """Size and training position, kept beside the checkpoint's results (the runner's ``checkpoint.json``):
    the family figure still places a checkpoint whose run folder is gone."""
    return {**model_shape(model), **training_position(model)}


def n_records(cfg: Config) -> int:
    return len(cfg.lambdas) * cfg.n_prompts


def summarize_models(members: list[dict], cfg: Config) -> tuple[dict, list[dict]]:
    """Every checkpoint with its size, training position and per-lambda means; one CSV row per (model, lambda)."""
    family = {"tasks": cfg.tasks, "family": members[0]["summary"]["family"], "confidence": cfg.confidence,
              "n_examples": cfg.n_examples, "models": []}
    rows = []
    for m in members:
        position = m["checkpoint"] or describe_model(m["name"])
        model = {"model": m["name"], "n_layer": position["n_layer"], "n_embd": position["n_embd"],
                 "n_parameters": m["identity"]["n_parameters"], "tokenization": None, **position}
        family["models"].append({**model, "per_lambda": m["summary"]["per_lambda"]})
        for entry in m["summary"]["per_lambda"]:
            row = {**model, "lambda": entry["lambda"], "n_prompts": entry["n_prompts"]}
            for q in QUANTITIES:
                row.update({f"{q}_{k}": entry[q][k] for k in ("mean", "ci_low", "ci_high")})
            row.update(metrics.choice_columns(entry.get("per_prompt")))  # also reads summaries kept from before
            rows.append(row)
    return family, rows


def plot_models(summary: dict, cfg: Config, out_dir) -> list:
    """Superposition and averaging mass against training tokens, one line per run (model size)."""
    from tasksup.plots import emergence_curves

    lam = min(cfg.lambdas, key=lambda x: abs(x - 0.5))
    a, b = cfg.tasks
    title = f"{cfg.title + ': ' if cfg.title else ''}{a} vs {b}, lambda = {lam:g}, m = {cfg.n_examples}"
    return emergence_curves(summary["models"], lam, (a, b), title, out_dir / "emergence")
