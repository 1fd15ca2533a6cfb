"""Fig. 2 (§3): a uniform (or any) mixture of K tasks' examples; the probability of each task's answer.

Per prompt: the K answer probabilities (Eq. 3, exact), ``other``, both KLs, tokenization flags and,
with ``top_k``, the exact top-K complete outputs and r. The summary: quartiles of each, and
``per_prompt`` (:func:`tasksup.metrics.per_prompt_choice`: does each prompt spread over the tasks, or
pick one, and whose example's?). Fields: docs/summaries.md.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from tqdm import tqdm

from tasksup import metrics
from tasksup.experiments import CommonConfig, model_name
from tasksup.tasks import PromptBuilder, check_fits, example_counts, normalize_mixture, resolve_tasks


@dataclass
class Config(CommonConfig):
    tasks: str | list[str] = "add_translate"  # a family or a list of task names sharing one input space
    mixture: str | list = "uniform"  # the in-context distribution D (numbers or fractions like "1/12")
    n_examples: int = 80  # m; the paper's Fig. 2 uses 20 examples per task (80 for K=4, 60 for K=3)
    n_prompts: int = 100
    order: str = "random"  # random | blocked
    delimiter: str = "\n"
    terminator: str | None = None  # appended to every answer when scoring (paper: none)
    tokenization: str = "in_context"  # in_context | separate (Eq. 3 literally; see scoring.py)
    top_k: int = 0  # > 0: also find the exact top-k complete outputs (ended by the delimiter) and r
    top_max_tokens: int = 16
    title: str = ""


def check(cfg: Config) -> None:
    tasks = resolve_tasks(cfg.tasks)
    example_counts(normalize_mixture(cfg.mixture, len(tasks)), cfg.n_examples)
    PromptBuilder(tasks, cfg.delimiter)


def build_prompt(cfg: Config, builder: PromptBuilder, index: int):
    rng = np.random.default_rng([cfg.seed, index])
    return builder.build(cfg.mixture, cfg.n_examples, rng, order=cfg.order, terminator=cfg.terminator)


def score_record(cfg: Config, lm, prompts: list, indices: list[int]) -> list[dict]:
    """Score a batch of prompts; one JSON-ready record each (the core keys every experiment shares)."""
    texts, answers = [p.text for p in prompts], [p.answers for p in prompts]
    if cfg.top_k > 0:  # one prompt pass serves both the answers' scores and the top-k search
        scores, found = lm.score_and_search(texts, answers, cfg.terminator, cfg.tokenization, k=cfg.top_k,
                                            stop=cfg.delimiter, max_tokens=cfg.top_max_tokens)
    else:
        scores = lm.score(texts, answers, cfg.terminator, cfg.tokenization)
    records = []
    for j, (i, p, lp) in enumerate(zip(indices, prompts, scores.logprobs)):
        probs = np.exp(lp)
        rec = {
            "index": i, "prompt": p.text, "tasks": p.tasks, "mixture": p.mixture, "counts": p.counts,
            "example_tasks": p.example_tasks, "answers": p.answers, "logprobs": lp.tolist(), "probs": probs.tolist(),
            "other": float(metrics.other_mass(probs)), "kl": float(metrics.kl_paper(p.mixture, lp)),
            "kl_normalized": float(metrics.kl_normalized(p.mixture, lp)),
            "boundary_merge": scores.boundary_merge[j], "separate_differs": scores.separate_differs[j],
            "collision_resamples": p.collision_resamples, "leak_resamples": p.leak_resamples,
        }
        if cfg.top_k > 0:
            rec["top"] = [[o, pr] for o, pr in found[j].outputs]
            rec["r"] = metrics.tasks_in_top(p.answers, [o for o, _ in found[j].outputs])
        records.append(rec)
    return records


def run(cfg: Config, lm, run_dir, progress: bool = True) -> None:
    builder = PromptBuilder(resolve_tasks(cfg.tasks), cfg.delimiter)
    check_fits(lm, lambda k: ((p.text, p.answers) for i in range(cfg.n_prompts)
                              for p in [build_prompt(replace(cfg, n_examples=k), builder, i)]),
               cfg.n_examples, terminator=cfg.terminator, generate=cfg.top_max_tokens if cfg.top_k else 0)
    done = run_dir.done()  # read once: calling it per prompt re-parses the whole JSONL n_prompts times
    todo = [i for i in range(cfg.n_prompts) if i not in done]
    bar = tqdm(total=cfg.n_prompts, initial=cfg.n_prompts - len(todo), desc="prompts", disable=not progress)
    for start in range(0, len(todo), cfg.batch_size):
        idx = todo[start:start + cfg.batch_size]
        run_dir.append(score_record(cfg, lm, [build_prompt(cfg, builder, i) for i in idx], idx))
        bar.update(len(idx))
    bar.close()


def headline(summary: dict) -> str:
    probs = ", ".join(f"{name} {q['median']:.3f}" for name, q in summary["per_task"].items())
    r = f"; median r {summary['r']['median']:g}" if "r" in summary else ""
    return f"median P(answer) over {summary['n_prompts']} prompts: {probs}; other {summary['other']['median']:.3f}{r}"


def summarize(records: list[dict], cfg: Config) -> tuple[dict, list[dict]]:
    tasks = records[0]["tasks"]
    probs = np.array([r["probs"] for r in records])
    summary = {"n_prompts": len(records), "tasks": tasks, "mixture": records[0]["mixture"], "per_task": {}}
    rows = []
    for k, name in enumerate(tasks):
        summary["per_task"][name] = metrics.quartiles(probs[:, k])
        rows.append({"quantity": name, **summary["per_task"][name]})
    for key in ("other", "kl", "kl_normalized") + (("r",) if "r" in records[0] else ()):
        summary[key] = metrics.quartiles([r[key] for r in records])
        rows.append({"quantity": key, **summary[key]})
    summary["boundary_merges"] = int(sum(any(r["boundary_merge"]) for r in records))
    summary["separate_differs"] = int(sum(any(r["separate_differs"]) for r in records))
    summary["collision_resamples"] = int(sum(r["collision_resamples"] for r in records))
    # inside a prompt or on average only: does each prompt spread over the tasks, or pick one (and whose)?
    summary["per_prompt"] = metrics.per_prompt_choice(records)
    for key, share in metrics.choice_columns(summary["per_prompt"]).items():
        rows.append({"quantity": key, "share": share})
    return summary, rows


def plot(records: list[dict], summary: dict, cfg: Config, out_dir) -> list:
    from tasksup.plots import task_boxplot

    probs = np.array([r["probs"] for r in records])
    other = np.array([r["other"] for r in records])
    title = cfg.title or f"{model_name(cfg.model)}: {', '.join(summary['tasks'])}"
    return task_boxplot(probs, other, summary["tasks"], summary["mixture"], title, out_dir / "fig2",
                        summary.get("per_prompt"))
