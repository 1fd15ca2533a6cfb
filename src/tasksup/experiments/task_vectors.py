"""Fig. 4 (§6): task vectors of pure and mixed prompts, projected by LDA; how mixtures combine.

Stage 1 (:mod:`tasksup.vectors.pipeline`) finds the task-vector layer ℓ*. Then, for every mixture
of ``mixtures``, ``n_prompts`` prompts (prompt i of mixture j from ``default_rng([seed, j, i])``):
each record holds the core keys (the prompt's answer probabilities, exact) and ``vector``, the
hidden state at the query's separator at ℓ*. The summary fits scikit-learn's LDA on the pure
prompts' vectors and measures, in the full hidden space:

- ``relative_distance``: |mean of the mixture's vectors - sum_k D_k (pure mean k)| / mean distance
  between two pure means (Finding 3 says: small);
- ``recovered``: the simplex weights that best rebuild the mixture's mean vector from the pure
  means (:func:`~tasksup.vectors.simplex_weights`), and their mean absolute error against D, for
  the mean vector and averaged over single prompts.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
from tqdm import tqdm

from tasksup.errors import TasksupError
from tasksup.experiments import mixture as mixture_experiment
from tasksup.experiments import model_name
from tasksup.tasks import PromptBuilder, example_counts, normalize_mixture, resolve_tasks
from tasksup.vectors import pipeline
from tasksup.vectors.decompose import decomposition_errors
from tasksup.vectors.extract import last_token_states
from tasksup.vectors.lda import fit_lda, mixture_geometry, pure_spread

THIRD = "1/3"
# The paper's grid for three tasks (Fig. 4 legend: "P(t1)/P(t2)/P(t3)"): each task alone, each pair
# half and half, all three equally; plus each pair at 3:1, which tests the combination off-centre.
PAPER_MIXTURES = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5], [THIRD, THIRD, THIRD],
                  [0.75, 0.25, 0], [0.25, 0.75, 0], [0.75, 0, 0.25], [0.25, 0, 0.75], [0, 0.75, 0.25], [0, 0.25, 0.75]]


@dataclass
class Config(pipeline.VectorConfig):
    mixtures: list[list] = field(default_factory=lambda: [list(m) for m in PAPER_MIXTURES])  # every pure task needed


def _pure_index(mixture: np.ndarray) -> int | None:
    return int(np.argmax(mixture)) if np.isclose(mixture.max(), 1.0) else None


def check(cfg: Config) -> None:
    pipeline.check(cfg)
    k = len(resolve_tasks(cfg.tasks))
    mixes = [normalize_mixture(m, k) for m in cfg.mixtures]
    for d in mixes:
        example_counts(d, cfg.n_examples)
    if sorted(i for i in (_pure_index(d) for d in mixes) if i is not None) != list(range(k)):
        raise TasksupError(f"mixtures must contain each of the {k} pure tasks exactly once (LDA is fit on them)")


def scoring_config(cfg: Config, mixture) -> mixture_experiment.Config:
    """The Fig. 2 config that scores one mixture's prompts (its core record keys)."""
    shared = {f.name: getattr(cfg, f.name) for f in fields(mixture_experiment.Config) if hasattr(cfg, f.name)}
    return mixture_experiment.Config(**dict(shared, experiment="mixture", mixture=mixture))


def run(cfg: Config, lm, run_dir, progress: bool = True) -> None:
    prep = pipeline.prepare(cfg, lm, run_dir.path, progress)
    builder = PromptBuilder(resolve_tasks(cfg.tasks), cfg.delimiter)
    done = run_dir.done()
    todo = [(j, i) for j in range(len(cfg.mixtures)) for i in range(cfg.n_prompts) if (j, i) not in done]
    bar = tqdm(total=len(cfg.mixtures) * cfg.n_prompts, initial=len(cfg.mixtures) * cfg.n_prompts - len(todo),
               desc="mixture prompts", disable=not progress)
    for start in range(0, len(todo), cfg.batch_size):
        batch = todo[start:start + cfg.batch_size]
        for j in sorted({j for j, _ in batch}):
            idx = [i for jj, i in batch if jj == j]
            prompts = [builder.build(cfg.mixtures[j], cfg.n_examples, np.random.default_rng([cfg.seed, j, i]),
                                     order=cfg.order, terminator=cfg.terminator) for i in idx]
            states = last_token_states(lm, [p.text for p in prompts])[:, prep.layer]
            records = mixture_experiment.score_record(scoring_config(cfg, cfg.mixtures[j]), lm, prompts, idx)
            run_dir.append([dict(r, index=[j, i], mixture_index=j, layer=prep.layer,
                                 vector=[float(f"{x:.8g}") for x in s.tolist()])
                            for r, i, s in zip(records, idx, states)])
        bar.update(len(batch))
    bar.close()


def _by_mixture(records: list[dict]) -> tuple[dict, dict, dict]:
    """Per mixture index: its distribution D, its prompts' vectors [n, d], its records."""
    by_mix: dict[int, list[dict]] = {}
    for r in records:
        by_mix.setdefault(r["mixture_index"], []).append(r)
    mixtures = {j: np.array(rs[0]["mixture"]) for j, rs in sorted(by_mix.items())}
    vectors = {j: np.array([r["vector"] for r in rs]) for j, rs in by_mix.items()}
    return mixtures, vectors, by_mix


def _pure_lda(tasks: list[str], mixtures: dict, vectors: dict):
    """The pure tasks' mean vectors [K, d] and the LDA fit on their prompts' vectors."""
    pure = {_pure_index(d): j for j, d in mixtures.items() if _pure_index(d) is not None}
    means = np.stack([vectors[pure[k]].mean(0) for k in range(len(tasks))])
    lda = fit_lda(np.concatenate([vectors[pure[k]] for k in range(len(tasks))]),
                  [tasks[k] for k in range(len(tasks)) for _ in vectors[pure[k]]])
    return means, lda


def summarize(records: list[dict], cfg: Config) -> tuple[dict, list[dict]]:
    tasks = records[0]["tasks"]
    mixtures, vectors, by_mix = _by_mixture(records)
    pure_means, lda = _pure_lda(tasks, mixtures, vectors)
    spread = pure_spread(pure_means)
    per_mixture, rows = [], []
    for j, d in mixtures.items():
        v = vectors[j]
        mean = v.mean(0)
        whole = decomposition_errors(pure_means, mean, [d])
        single = decomposition_errors(pure_means, v, [d] * len(v))
        probs = np.array([r["probs"] for r in by_mix[j]])
        entry = {"index": j, "mixture": d.tolist(), "label": "/".join(f"{x:.2f}" for x in d), "n_prompts": len(v),
                 **mixture_geometry(pure_means, mean, d),
                 "within_spread": float(np.linalg.norm(v - mean, axis=1).mean() / spread),
                 "recovered": whole["weights"][0], "recovery_mae": whole["mae"][0],
                 "recovery_mae_single_prompts": float(np.mean(single["mae"])),
                 "lda_mean": lda.transform(mean[None])[0].tolist(),
                 "mean_probs": probs.mean(0).tolist(), "mean_other": float(1 - probs.sum(1).mean())}
        per_mixture.append(entry)
        rows.append({"mixture": entry["label"], "relative_distance": entry["relative_distance"],
                     "within_spread": entry["within_spread"], "recovery_mae": entry["recovery_mae"],
                     "recovery_mae_single_prompts": entry["recovery_mae_single_prompts"],
                     **{f"recovered_{t}": w for t, w in zip(tasks, entry["recovered"])},
                     **{f"P_{t}": p for t, p in zip(tasks, entry["mean_probs"])}})
    mixed = [e for e in per_mixture if max(e["mixture"]) < 1 - 1e-9]

    def mean_of(key):
        return float(np.mean([e[key] for e in mixed])) if mixed else None

    summary = {"tasks": tasks, "layer": records[0]["layer"], "pure_spread": spread,
               "lda_explained_variance_ratio": lda.explained_variance_ratio_.tolist(),
               "mean_relative_distance_mixed": mean_of("relative_distance"),
               "mean_within_spread": float(np.mean([e["within_spread"] for e in per_mixture])),
               "mean_recovery_mae_mixed": mean_of("recovery_mae"),
               "mean_recovery_mae_single_prompts_mixed": mean_of("recovery_mae_single_prompts"),
               "per_mixture": per_mixture}
    return summary, rows


def plot(records: list[dict], summary: dict, cfg: Config, out_dir) -> list:
    import json

    from tasksup.plots import layer_accuracy_curves, task_vector_scatter

    tasks = summary["tasks"]
    mixtures, vectors, _ = _by_mixture(records)
    _, lda = _pure_lda(tasks, mixtures, vectors)
    points = {j: lda.transform(v) for j, v in vectors.items()}
    title = cfg.title or f"{model_name(cfg.model)}: task vectors at layer {summary['layer']} (LDA fit on the pure tasks)"
    paths = task_vector_scatter(points, mixtures, tasks, title, out_dir / "fig4")
    report = json.loads((out_dir / pipeline.LAYERS_FILE).read_text())
    if "mean_layer_accuracy" in report:
        paths += layer_accuracy_curves(report, f"{model_name(cfg.model)}: patched lone-query accuracy per layer",
                                       out_dir / "fig4_layers")
    return paths
