"""Fig. 5 (§6): convex combinations of two task vectors patched into lone queries vs ICL mixtures.

Stage 1 (:mod:`tasksup.vectors.pipeline`) gives V_A, V_B and the layer ℓ*. For every λ and query i
(prompt i of λ step j from ``default_rng([seed, j * n_prompts + i])``, as in Fig. 3):

- ``mode="icl"``: the prompt of m examples in the ratio λ : 1-λ, scored as in Fig. 2/3;
- ``mode="patched"``: the same query alone, with V_λ = λ V_A + (1-λ) V_B patched in at its last
  token at ℓ* (replaced for task vectors, added for function vectors), scored the same way.

Records carry the core keys plus ``mode``, ``lambda`` and ``mixture`` = [λ, 1-λ]; ``index`` is
``[j * n_prompts + i, mode]``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import pearsonr
from tqdm import tqdm

from tasksup import metrics
from tasksup.errors import TasksupError
from tasksup.experiments import mixture as mixture_experiment
from tasksup.experiments import model_name
from tasksup.experiments.task_vectors import scoring_config
from tasksup.tasks import PromptBuilder, example_counts, resolve_tasks
from tasksup.vectors import pipeline
from tasksup.vectors.decompose import interpolate
from tasksup.vectors.hooks import Patch, patching

MODES = ("patched", "icl")
PAPER_LAMBDAS = [round(0.1 * i, 1) for i in range(11)]


@dataclass
class Config(pipeline.VectorConfig):
    tasks: list[str] = field(default_factory=lambda: ["copy_op1", "copy_op2"])  # A (weight λ), B (weight 1-λ)
    lambdas: list[float] = field(default_factory=lambda: list(PAPER_LAMBDAS))  # paper: 0, 0.1, ..., 1
    top_k: int = 0  # > 0: also the exact top-k complete outputs of every query and r
    top_max_tokens: int = 16


def check(cfg: Config) -> None:
    pipeline.check(cfg)
    if len(cfg.tasks) != 2:
        raise TasksupError(f"vector_patching interpolates exactly two tasks (A, B), got {cfg.tasks}")
    if not cfg.lambdas or len(set(cfg.lambdas)) != len(cfg.lambdas):  # each in [0, 1]: config.RANGES
        raise TasksupError(f"lambdas must be distinct numbers in [0, 1], got {cfg.lambdas}")
    for lam in cfg.lambdas:
        example_counts(np.array([lam, 1.0 - lam]), cfg.n_examples)


def run(cfg: Config, lm, run_dir, progress: bool = True) -> None:
    prep = pipeline.prepare(cfg, lm, run_dir.path, progress, generate=cfg.top_max_tokens if cfg.top_k else 0)
    v_a, v_b = (prep.patch_vectors[t] for t in prep.tasks)
    builder = PromptBuilder(resolve_tasks(cfg.tasks), cfg.delimiter)
    done = run_dir.done()
    total = len(cfg.lambdas) * cfg.n_prompts
    bar = tqdm(total=total * len(MODES), initial=len(done), desc="queries", disable=not progress)
    for j, lam in enumerate(cfg.lambdas):
        scfg = scoring_config(cfg, [lam, 1.0 - lam])
        patch = [Patch(prep.layer, interpolate(v_a, v_b, lam), prep.mode)]
        for mode in MODES:
            todo = [j * cfg.n_prompts + i for i in range(cfg.n_prompts) if (j * cfg.n_prompts + i, mode) not in done]
            for start in range(0, len(todo), cfg.batch_size):
                idx = todo[start:start + cfg.batch_size]
                prompts = [mixture_experiment.build_prompt(scfg, builder, i) for i in idx]
                if mode == "patched":
                    prompts = [dataclasses.replace(p, text=p.query_text, counts=[0] * len(p.counts), example_tasks=[])
                               for p in prompts]
                    with patching(lm.model, patch):
                        records = mixture_experiment.score_record(scfg, lm, prompts, idx)
                else:
                    records = mixture_experiment.score_record(scfg, lm, prompts, idx)
                run_dir.append([dict(r, index=[i, mode], mode=mode, mixture=[lam, 1.0 - lam], layer=prep.layer,
                                     method=cfg.method, **{"lambda": lam}) for r, i in zip(records, idx)])
                bar.update(len(idx))
    bar.close()


def summarize(records: list[dict], cfg: Config) -> tuple[dict, list[dict]]:
    tasks = records[0]["tasks"]
    summary = {"tasks": tasks, "layer": records[0]["layer"], "method": records[0]["method"], "modes": {}}
    rows = []
    for mode in MODES:
        rs = [r for r in records if r["mode"] == mode]
        if not rs:
            continue
        per_lambda = []
        for lam in sorted({r["lambda"] for r in rs}):
            probs = np.array([r["probs"] for r in rs if r["lambda"] == lam])
            entry = {"lambda": lam, "n_prompts": len(probs), tasks[0]: metrics.quartiles(probs[:, 0]),
                     tasks[1]: metrics.quartiles(probs[:, 1]), "other": metrics.quartiles(1 - probs.sum(1)),
                     "a_over_ab": float(np.mean(probs[:, 0] / probs.sum(1)))}
            per_lambda.append(entry)
            rows.append({"mode": mode, "lambda": lam, **{f"{q}_{s}": entry[q][s] for q in (tasks[0], tasks[1], "other")
                                                       for s in ("mean", "median", "q1", "q3")},
                         "a_over_ab": entry["a_over_ab"]})
        lams = [e["lambda"] for e in per_lambda]
        mean_a = [e[tasks[0]]["mean"] for e in per_lambda]
        summary["modes"][mode] = {
            "per_lambda": per_lambda,
            "pearson_mean_a_vs_lambda": float(pearsonr(lams, mean_a)[0]) if len(lams) > 2 else None,
            "mean_other": float(np.mean([e["other"]["mean"] for e in per_lambda])),
            "pure_p_above_half": _pure_p_above_half(rs, tasks),
        }
    return summary, rows


def _pure_p_above_half(records: list[dict], tasks: list[str]) -> dict:
    """At λ = 1 (task A) and λ = 0 (task B): the share of queries whose task answer has probability > 0.5."""
    out = {}
    for lam, k in ((1.0, 0), (0.0, 1)):
        probs = np.array([r["probs"] for r in records if r["lambda"] == lam])
        if len(probs):
            out[tasks[k]] = float(np.mean(probs[:, k] > 0.5))
    return out


def plot(records: list[dict], summary: dict, cfg: Config, out_dir) -> list:
    from tasksup.plots import lambda_curves

    tasks = summary["tasks"]
    paths = []
    for mode, entry in summary["modes"].items():
        what = (f"{summary['method'].replace('_', ' ')} patched at layer {summary['layer']}" if mode == "patched"
                else "ICL mixture of examples")
        title = cfg.title or f"{model_name(cfg.model)}: {tasks[0]} vs {tasks[1]}, {what}"
        xlabel = f"weight lambda of {tasks[0]}'s task vector in the patch" if mode == "patched" else None
        paths += lambda_curves(entry["per_lambda"], tasks, title, out_dir / f"fig5_{mode}", xlabel=xlabel)
    return paths
