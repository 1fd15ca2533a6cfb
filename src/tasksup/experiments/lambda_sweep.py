"""Fig. 3 (§4): two tasks' examples in the ratio lambda : 1 - lambda; the probability of each task's answer.

For every lambda in ``lambdas``, ``n_prompts`` prompts of m examples (counts by
:func:`~tasksup.tasks.example_counts`) are scored exactly as in Fig. 2 (:mod:`.mixture`), so each
record has the core keys plus ``lambda``. Prompt i of lambda step j is record index
``j * n_prompts + i``, drawn from ``default_rng([seed, index])``: any prompt can be rebuilt alone
and an interrupted run resumes. Ideal calibration is P(A) = lambda, P(B) = 1 - lambda.

The summary has, per lambda, the quartiles of P(A), P(B), ``other``, their sum and the normalised KL,
and ``per_prompt`` (:func:`tasksup.metrics.per_prompt_choice` over that lambda's prompts: superposing
inside a prompt, or committing to one task per prompt); the figure shows the mean and median curves
and, beside them, box plots of P(A) and P(B) per prompt. Fields: docs/summaries.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import numpy as np
from scipy.stats import pearsonr
from tqdm import tqdm

from tasksup import metrics
from tasksup.errors import TasksupError
from tasksup.experiments import CommonConfig, mixture, model_name
from tasksup.tasks import PromptBuilder, check_fits, example_counts, resolve_tasks

PAPER_LAMBDAS = [round(0.1 * i, 1) for i in range(11)]
LAYOUT_KEYS = {"n_prompts"}  # prompt i of lambda j is index j * n_prompts + i: a resume may not change it


@dataclass
class Config(CommonConfig):
    tasks: list[str] = field(default_factory=lambda: ["ret2", "ret6"])  # task A (weight lambda), task B (1 - lambda)
    lambdas: list[float] = field(default_factory=lambda: list(PAPER_LAMBDAS))  # paper: 0, 0.1, ..., 1
    n_examples: int = 10  # m (paper: not stated); 10 makes every lambda in steps of 0.1 an exact count
    n_prompts: int = 100  # per lambda (paper: 100)
    order: str = "random"  # random | blocked
    delimiter: str = "\n"
    terminator: str | None = None  # appended to every answer when scoring (paper: none)
    tokenization: str = "in_context"  # in_context | separate (see scoring.py)
    top_k: int = 0  # > 0: also the exact top-k complete outputs and r
    top_max_tokens: int = 16
    title: str = ""


def mixture_config(cfg: Config, lam: float) -> mixture.Config:
    """The Fig. 2 config that scores the prompts of one lambda (mixture [lambda, 1 - lambda])."""
    shared = {f.name: getattr(cfg, f.name) for f in fields(mixture.Config) if hasattr(cfg, f.name)}
    return mixture.Config(**dict(shared, experiment="mixture", mixture=[lam, 1.0 - lam]))


def all_prompts(cfg, builder: PromptBuilder) -> list:
    """Every prompt of a sweep (this experiment's or emergence's config), by index: index i holds lambda
    ``lambdas[i // n_prompts]``."""
    return [mixture.build_prompt(mixture_config(cfg, cfg.lambdas[i // cfg.n_prompts]), builder, i)
            for i in range(len(cfg.lambdas) * cfg.n_prompts)]


def n_records(cfg: Config) -> int:
    return len(cfg.lambdas) * cfg.n_prompts


def check(cfg: Config) -> None:
    if len(cfg.tasks) != 2:
        raise TasksupError(f"lambda_sweep mixes exactly two tasks (A, B), got {cfg.tasks}")
    if not cfg.lambdas:  # each in [0, 1]: config.RANGES
        raise TasksupError("lambdas must be a non-empty list of numbers in [0, 1], got []")
    if len(set(cfg.lambdas)) != len(cfg.lambdas):
        raise TasksupError(f"lambdas repeat a value: {cfg.lambdas}")
    tasks = resolve_tasks(cfg.tasks)
    for lam in cfg.lambdas:
        example_counts(np.array([lam, 1.0 - lam]), cfg.n_examples)
    PromptBuilder(tasks, cfg.delimiter)


def run(cfg: Config, lm, run_dir, progress: bool = True) -> None:
    builder = PromptBuilder(resolve_tasks(cfg.tasks), cfg.delimiter)
    check_fits(lm, lambda k: ((p.text, p.answers) for p in all_prompts(replace(cfg, n_examples=k), builder)), cfg.n_examples,
               terminator=cfg.terminator, generate=cfg.top_max_tokens if cfg.top_k else 0)
    total = len(cfg.lambdas) * cfg.n_prompts
    done = run_dir.done()
    todo = [i for i in range(total) if i not in done]
    bar = tqdm(total=total, initial=total - len(todo), desc="prompts", disable=not progress)
    for start in range(0, len(todo), cfg.batch_size):
        by_lambda: dict[int, list[int]] = {}
        for i in todo[start:start + cfg.batch_size]:
            by_lambda.setdefault(i // cfg.n_prompts, []).append(i)
        for j, idx in by_lambda.items():
            mcfg = mixture_config(cfg, cfg.lambdas[j])
            records = mixture.score_record(mcfg, lm, [mixture.build_prompt(mcfg, builder, i) for i in idx], idx)
            run_dir.append([dict(r, **{"lambda": cfg.lambdas[j]}) for r in records])
        bar.update(min(cfg.batch_size, len(todo) - start))
    bar.close()


def headline(summary: dict) -> str:
    a, b = summary["tasks"]
    pearson = summary["pearson_mean_a_vs_lambda"]
    return (f"{a} vs {b}: " + (f"Pearson(lambda, mean P({a})) {pearson:.4f}; " if pearson is not None else "")
            + f"min mean P({a})+P({b}) {summary['min_mean_sum']:.3f}")


def summarize(records: list[dict], cfg: Config) -> tuple[dict, list[dict]]:
    tasks = records[0]["tasks"]
    lambdas = sorted({r["lambda"] for r in records})
    per_lambda, rows = [], []
    for lam in lambdas:
        rs = [r for r in records if r["lambda"] == lam]
        probs = np.array([r["probs"] for r in rs])
        entry = {"lambda": lam, "n_prompts": len(rs), tasks[0]: metrics.quartiles(probs[:, 0]),
                 tasks[1]: metrics.quartiles(probs[:, 1]), "other": metrics.quartiles([r["other"] for r in rs]),
                 "sum": metrics.quartiles(probs.sum(1)), "kl_normalized": metrics.quartiles([r["kl_normalized"] for r in rs]),
                 # inside a prompt or on average only: None where no prompt holds both tasks (lambda 0 and 1)
                 "per_prompt": metrics.per_prompt_choice(rs)}
        per_lambda.append(entry)
        rows.append({"lambda": lam, **{f"{q}_{stat}": entry[q][stat] for q in (tasks[0], tasks[1], "other")
                                       for stat in ("mean", "median", "q1", "q3")},
                     **metrics.choice_columns(entry["per_prompt"])})
    mean_a = np.array([e[tasks[0]]["mean"] for e in per_lambda])
    summary = {"tasks": tasks, "n_examples": cfg.n_examples, "per_lambda": per_lambda,
               # acceptance-style numbers: the mean curve of P(A) against lambda, and the worst lambda
               "pearson_mean_a_vs_lambda": float(pearsonr(lambdas, mean_a)[0]) if len(lambdas) > 2 else None,
               "pearson_prompts_a_vs_lambda": float(pearsonr([r["lambda"] for r in records],
                                                             [r["probs"][0] for r in records])[0])
               if len(lambdas) > 2 else None,
               "min_mean_sum": float(min(e["sum"]["mean"] for e in per_lambda)),
               "max_mean_other": float(max(e["other"]["mean"] for e in per_lambda)),
               "collision_resamples": int(sum(r["collision_resamples"] for r in records)),
               "per_prompt": metrics.per_prompt_choice(records)}  # every lambda's mixed prompts together
    return summary, rows


def plot(records: list[dict], summary: dict, cfg: Config, out_dir) -> list:
    from tasksup.plots import lambda_curves

    a, b = summary["tasks"]
    title = cfg.title or f"{model_name(cfg.model)}: {a} vs {b} (m = {cfg.n_examples})"
    return lambda_curves(summary["per_lambda"], summary["tasks"], title, out_dir / "fig3", records=records)
