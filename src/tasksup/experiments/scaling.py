"""Fig. 6 (§7): tasks solved in parallel (r) and calibration (KL) across a family of model sizes.

For every model of the family and every in-context distribution D (D1, D2, D3), ``n_prompts``
mixture prompts of the K=6 ``numeric6`` tasks are scored exactly as the ``mixture`` experiment does
(:func:`tasksup.experiments.mixture.score_record`): the K answer probabilities, both KLs, and the
exact top-K complete outputs with r = how many task answers are among them.

Prompt i under every distribution and for every model is drawn from ``default_rng([seed, i])``, so
the example inputs, their order and the query are the same everywhere; only which task answers each
example (the labels, set by D) differs. Differences between distributions and between models are
therefore paired on identical queries.

``MULTI_MODEL``: the runner calls :func:`run`/:func:`summarize`/:func:`plot` once per model, each in
its own run directory, then :func:`summarize_models`/:func:`plot_models` once for the family.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from tasksup import metrics
from tasksup.errors import TasksupError
from tasksup.experiments import CommonConfig, mixture, model_name
from tasksup.tasks import PromptBuilder, check_fits, example_counts, normalize_mixture, resolve_tasks

MULTI_MODEL = True
# The paper's three distributions over the six numeric6 tasks, as exact fractions. D3 "alternates
# 0.25 and 0.083": 0.083 is 1/12 rounded (weights 3:1, so 3/4 + 3/12 = 1 exactly; the rounded
# decimals would sum to 0.999). With m = 60 every count is an integer: D1 10 each, D2 6/6/30/6/6/6,
# D3 15/5/15/5/15/5.
PAPER_DISTRIBUTIONS = {
    "D1": "uniform",
    "D2": ["1/10", "1/10", "1/2", "1/10", "1/10", "1/10"],
    "D3": ["1/4", "1/12", "1/4", "1/12", "1/4", "1/12"],
}
QUANTITIES = ("r", "kl", "kl_normalized", "other")  # per-prompt values summarised with bootstrap CIs


@dataclass
class Config(CommonConfig):
    experiment: str = "scaling"
    models: list[str] = field(default_factory=list)  # the family, smallest first; `--models A B ...` overrides
    tasks: str | list[str] = "numeric6"  # K = 6: num, -num, num+1, num-1, 2*num, num^2 on "{num}->"
    distributions: dict = field(default_factory=lambda: dict(PAPER_DISTRIBUTIONS))  # name -> D (as `mixture`)
    n_examples: int = 60  # m (paper: 60, 10 per task under D1)
    n_prompts: int = 100  # per distribution (paper: 100)
    order: str = "random"  # random | blocked
    delimiter: str = "\n"
    terminator: str | None = "\n"  # score "answer\n", the same complete outputs the top-K search returns
    tokenization: str = "in_context"  # in_context | separate (see scoring.py)
    top_k: int | None = None  # r counts task answers among the exact top-k outputs; None: k = K (the paper)
    top_max_tokens: int = 8  # longest output the top-k search considers (numeric6 answers: at most 5 + "\n")
    bootstrap_resamples: int = 10_000
    confidence: float = 0.95
    title: str = ""


def member_config(cfg: Config, distribution: str) -> mixture.Config:
    """The ``mixture`` experiment's config for one distribution: what score_record/build_prompt read."""
    shared = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(mixture.Config) if hasattr(cfg, f.name)}
    shared.update(experiment="mixture", mixture=cfg.distributions[distribution],
                  top_k=cfg.top_k or len(resolve_tasks(cfg.tasks)))
    return mixture.Config(**shared)


def check(cfg: Config) -> None:
    tasks = resolve_tasks(cfg.tasks)
    if not cfg.distributions:
        raise TasksupError("distributions must name at least one in-context distribution")
    for name, d in cfg.distributions.items():
        if not isinstance(name, str):
            raise TasksupError(f"distribution names must be strings, got {name!r}")
        if not isinstance(d, (str, list)):
            raise TasksupError(f"distribution {name}: give 'uniform' or a list of {len(tasks)} probabilities, got {d!r}")
        try:
            example_counts(normalize_mixture(d, len(tasks)), cfg.n_examples)
        except TasksupError as e:
            raise TasksupError(f"distribution {name}: {e}") from None
    if cfg.top_k is not None and cfg.top_k < 1:
        raise TasksupError(f"top_k must be at least 1 (or null for K), got {cfg.top_k}")
    if cfg.n_prompts < 2:
        raise TasksupError(f"n_prompts must be at least 2 (for a confidence interval), got {cfg.n_prompts}")
    if cfg.bootstrap_resamples < 100:
        raise TasksupError(f"bootstrap_resamples must be at least 100, got {cfg.bootstrap_resamples}")
    PromptBuilder(tasks, cfg.delimiter)


def run(cfg: Config, lm, run_dir, progress: bool = True) -> None:
    """Score every (distribution, prompt) not yet in ``run_dir``, a batch of prompts at a time."""
    builder = PromptBuilder(resolve_tasks(cfg.tasks), cfg.delimiter)
    check_fits(lm, lambda k: ((p.text, p.answers) for name in cfg.distributions for i in range(cfg.n_prompts)
                              for p in [mixture.build_prompt(member_config(dataclasses.replace(cfg, n_examples=k), name), builder, i)]),
               cfg.n_examples, terminator=cfg.terminator, generate=cfg.top_max_tokens)
    done = {(r["distribution"], r["index"]) for r in run_dir.records()}
    total = len(cfg.distributions) * cfg.n_prompts
    bar = tqdm(total=total, initial=len(done), desc=f"{lm.name} prompts", disable=not progress)
    for name in cfg.distributions:
        mcfg = member_config(cfg, name)
        todo = [i for i in range(cfg.n_prompts) if (name, i) not in done]
        for start in range(0, len(todo), cfg.batch_size):
            idx = todo[start:start + cfg.batch_size]
            records = mixture.score_record(mcfg, lm, [mixture.build_prompt(mcfg, builder, i) for i in idx], idx)
            run_dir.append([{"model": cfg.model, "distribution": name, **r} for r in records])
            bar.update(len(idx))
    bar.close()


def n_records(cfg: Config) -> int:
    return len(cfg.distributions) * cfg.n_prompts


def _by_distribution(records: list[dict], cfg: Config) -> dict[str, list[dict]]:
    groups = {name: [] for name in cfg.distributions}
    for r in records:
        groups[r["distribution"]].append(r)
    return {name: sorted(recs, key=lambda r: r["index"]) for name, recs in groups.items() if recs}


def summarize(records: list[dict], cfg: Config) -> tuple[dict, list[dict]]:
    """One model: per distribution, mean r / KLs / other with bootstrap CIs, per-task mean probabilities."""
    tasks = records[0]["tasks"]
    top_k = cfg.top_k or len(tasks)
    summary = {"model": cfg.model, "tasks": tasks, "top_k": top_k, "confidence": cfg.confidence,
               "bootstrap_resamples": cfg.bootstrap_resamples, "distributions": {}}
    rows = []
    for name, recs in _by_distribution(records, cfg).items():
        entry = {"mixture": recs[0]["mixture"], "counts": recs[0]["counts"], "n_prompts": len(recs)}
        for q in QUANTITIES:
            entry[q] = {**metrics.quartiles([r[q] for r in recs]),
                        **metrics.bootstrap_mean_ci([r[q] for r in recs], cfg.confidence, cfg.bootstrap_resamples,
                                                    cfg.seed)}
            rows.append({"distribution": name, "quantity": q, **entry[q]})
        entry["r_histogram"] = np.bincount([r["r"] for r in recs], minlength=top_k + 1).tolist()
        entry["mean_probs"] = dict(zip(tasks, np.mean([r["probs"] for r in recs], axis=0).tolist()))
        entry["collision_resamples"] = int(sum(r["collision_resamples"] for r in recs))
        summary["distributions"][name] = entry
    return summary, rows


def plot(records: list[dict], summary: dict, cfg: Config, out_dir) -> list:
    """One model: Fig. 2-style box plots of the task probabilities, a panel per distribution (probs.png)."""
    from tasksup.plots import task_boxplots

    panels = [(np.array([r["probs"] for r in recs]), np.array([r["other"] for r in recs]), recs[0]["mixture"],
               f"{name}: mean r = {summary['distributions'][name]['r']['mean']:.2f}")
              for name, recs in _by_distribution(records, cfg).items()]
    title = model_name(cfg.model) + (f" ({cfg.title})" if cfg.title else "")
    return task_boxplots(panels, summary["tasks"], title, out_dir / "probs")


def summarize_models(members: list[dict], cfg: Config) -> tuple[dict, list[dict]]:
    """The family: ``members`` = [{"name", "identity", "summary"}, ...] in the given (size) order.

    One CSV row per (model, distribution) with the means and CI bounds of r, kl, kl_normalized, other.
    """
    family = {"models": [], "distributions": list(cfg.distributions), "confidence": cfg.confidence,
              "top_k": members[0]["summary"]["top_k"]}
    rows = []
    for m in members:
        per_dist = {}
        for name, entry in m["summary"]["distributions"].items():
            per_dist[name] = {q: {k: entry[q][k] for k in ("mean", "ci_low", "ci_high")} for q in QUANTITIES}
            row = {"model": m["name"], "n_parameters": m["identity"]["n_parameters"], "distribution": name,
                   "n_prompts": entry["n_prompts"]}
            for q in QUANTITIES:
                row.update({f"{q}_mean": entry[q]["mean"], f"{q}_ci_low": entry[q]["ci_low"],
                            f"{q}_ci_high": entry[q]["ci_high"]})
            rows.append(row)
        family["models"].append({"name": m["name"], "n_parameters": m["identity"]["n_parameters"],
                                 "distributions": per_dist})
    return family, rows


def headline(summary: dict) -> str:
    """The family's mean r on its first distribution (a model's own summary has ``distributions`` only)."""
    if "models" not in summary:
        return ""
    first = summary["distributions"][0]
    return f"mean r on {first}: " + ", ".join(
        f"{model_name(m['name'])} {m['distributions'][first]['r']['mean']:.2f}" for m in summary["models"])


def plot_models(summary: dict, cfg: Config, out_dir) -> list:
    """Fig. 6: (a) mean r and (b) mean KL per model and distribution, with CI error bars; also the
    normalised KL."""
    from tasksup.plots import scaling_bars

    labels = [f"{m['name'].rstrip('/').split('/')[-1]}\n{m['n_parameters'] / 1e6:.3g}M" for m in summary["models"]]
    titles = {"r": f"(a) tasks in the top-{summary['top_k']} outputs, r",
              "kl": "(b) KL (released code's formula)", "kl_normalized": "KL over the K tasks (normalised)"}
    paths = []
    for stem, q in (("fig6a_r", "r"), ("fig6b_kl", "kl"), ("fig6_kl_normalized", "kl_normalized")):
        stats = {name: [[m["distributions"][name][q][k] for m in summary["models"]] for k in ("mean", "ci_low", "ci_high")]
                 for name in summary["distributions"]}
        paths += scaling_bars(labels, stats, q, f"{cfg.title + ': ' if cfg.title else ''}{titles[q]}", out_dir / stem,
                              ceiling=summary["top_k"] if q == "r" else None,
                              interval=f"{summary['confidence']:.0%} BCa bootstrap CI")
    return paths
