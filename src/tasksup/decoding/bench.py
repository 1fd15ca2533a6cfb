"""How many of the K task answers each decoder recovers from one mixture prompt, and at what cost.

Per prompt (a mixture of K tasks' examples and a query, as every experiment builds them):

- ``best_first``: the exact top-k complete outputs (:meth:`LanguageModel.search`), one prompt pass;
- ``greedy_single_task``: K greedy decodes, each of a prompt holding only that task's examples
  (the same number of examples, the same query) -- the conventional way to get every task's
  answer, which needs to know the tasks and costs K prompt passes;
- ``greedy_mixture``: one greedy decode of the mixture prompt (collapse: at most one task);
- ``sampling_until_k``: temperature-1 samples, one at a time after one prompt pass, until k
  distinct complete outputs were seen (or ``max_samples``);
- ``sampling_same_budget``: the same sample stream, cut where its forward token-steps reach
  best-first's (equal generation compute);
- ``superposed`` / ``superposed_wide``: Superposed Decoding with k and 4k drafts, one forward
  token-step per step whatever the number of drafts; both return their k best outputs.

Every method returns at most k outputs (sampling: the first k distinct ones), so recall compares
like with like.

Recall is the number of task answers among a method's outputs (for greedy_single_task: the
number of tasks whose decode equals their answer). Costs: prompt tokens run, forward
token-steps after the prompt passes, wall time (prompt passes included). All methods run
batch-1 on the same model in the same process, in the same order for every prompt (after one
untimed warm-up decode), so the ratios to best-first compare like with like even on a busy
machine. Records go to a :class:`RunDir` as each prompt finishes; a rerun resumes.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
from tqdm import tqdm

from tasksup import metrics
from tasksup.decoding.generate import PromptState, greedy_output, sample_outputs
from tasksup.decoding.superposed import superposed_decode
from tasksup.errors import TasksupError
from tasksup.results import RunDir
from tasksup.tasks import PromptBuilder, example_counts, example_inputs, normalize_mixture, resolve_tasks

METHODS = ("best_first", "greedy_single_task", "greedy_mixture", "sampling_until_k", "sampling_same_budget",
           "superposed", "superposed_wide")
BASELINES = {"greedy_single_task": "(a) K greedy decodes of single-task prompts",
             "sampling_until_k": "(b) sampling until k distinct outputs"}
WIDE = 4  # superposed_wide uses WIDE * k drafts


@dataclass
class BenchSettings:
    tasks: str | list[str] = "translate"
    n_examples: int = 60  # m, the paper's 20 per task for K = 3; lower it for models with a short context
    n_prompts: int = 20
    k: int | None = None  # outputs asked of each method; default K
    delimiter: str = "\n"
    max_tokens: int = 32
    max_samples: int = 200  # sampling gives up after this many samples
    seed: int = 0

    def check(self) -> list:
        """The resolved tasks; a one-line error for anything out of range."""
        tasks = resolve_tasks(self.tasks)
        for name in ("n_prompts", "max_tokens", "max_samples"):
            if getattr(self, name) < 1:
                raise TasksupError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.k is not None and self.k < 1:
            raise TasksupError(f"k must be at least 1, got {self.k}")
        example_counts(normalize_mixture("uniform", len(tasks)), self.n_examples)
        PromptBuilder(tasks, self.delimiter)
        return tasks


def single_task_prompt(task, m: int, query_text: str, delimiter: str, rng) -> str:
    """m examples of one task, then ``query_text`` (redrawn until no example shows the query's input)."""
    builder = PromptBuilder([task], delimiter)
    for _ in range(100):
        lines = builder.build("uniform", m, rng).text.split(delimiter)[:-1]
        if query_text not in example_inputs(delimiter.join(lines), delimiter, builder.space.separator):
            return delimiter.join(lines + [query_text])
    raise TasksupError(f"could not build {m} examples of {task.name} without the query {query_text!r}")


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _row(recall, prompt_tokens, forward_tokens, wall, outputs, **extra) -> dict:
    return {"recall": int(recall), "prompt_tokens": int(prompt_tokens), "forward_tokens": int(forward_tokens),
            "wall_s": wall, "outputs": outputs, **extra}


def sample_stream(lm, prompt: str, s: BenchSettings, k: int, budget: int, rng) -> tuple[tuple, tuple]:
    """Samples one at a time: (outputs, forward tokens, wall, reached) for sampling_until_k and
    sampling_same_budget (``reached``: k distinct outputs seen / the budget reached)."""
    start = time.perf_counter()
    state = PromptState(lm, prompt, s.delimiter, s.max_tokens)
    seen: list[str] = []
    fed, until_k, same_budget = 0, None, None
    for _ in range(s.max_samples):
        gen = sample_outputs(state, 1, 1.0, rng)
        if fed + gen.forward_tokens > budget and same_budget is None:
            same_budget = (list(seen), fed, time.perf_counter() - start, True)
        fed += gen.forward_tokens
        if gen.outputs[0] is not None and gen.outputs[0] not in seen:
            seen.append(gen.outputs[0])
        if len(seen) >= k and until_k is None:
            until_k = (list(seen), fed, time.perf_counter() - start, True)
        if until_k and same_budget:
            break
    end = (list(seen), fed, time.perf_counter() - start, False)
    return until_k or end, same_budget or end


def bench_prompt(lm, tasks, builder: PromptBuilder, s: BenchSettings, k: int, index: int) -> dict:
    prompt = builder.build("uniform", s.n_examples, np.random.default_rng([s.seed, index]), terminator=s.delimiter)
    answers = prompt.answers
    rows = {}
    found, wall = _timed(lambda: lm.search(prompt.text, k, s.delimiter, s.max_tokens))
    outs = [o for o, _ in found.outputs]
    rows["best_first"] = _row(metrics.tasks_in_top(answers, outs), found.prompt_tokens, found.forward_tokens, wall, outs)

    rng = np.random.default_rng([s.seed, index, 1])
    singles = [single_task_prompt(t, s.n_examples, prompt.query_text, s.delimiter, rng) for t in tasks]
    gens, wall = _timed(lambda: [greedy_output(lm, p, s.delimiter, s.max_tokens) for p in singles])
    outs = [g.outputs[0] for g in gens]
    rows["greedy_single_task"] = _row(sum(o == a for o, a in zip(outs, answers)), sum(g.prompt_tokens for g in gens),
                                      sum(g.forward_tokens for g in gens), wall, outs)

    gen, wall = _timed(lambda: greedy_output(lm, prompt.text, s.delimiter, s.max_tokens))
    rows["greedy_mixture"] = _row(metrics.tasks_in_top(answers, gen.outputs), gen.prompt_tokens, gen.forward_tokens,
                                  wall, gen.outputs)

    until_k, same = sample_stream(lm, prompt.text, s, k, found.forward_tokens, np.random.default_rng([s.seed, index, 2]))
    for name, (outs, fed, wall, reached) in (("sampling_until_k", until_k), ("sampling_same_budget", same)):
        rows[name] = _row(metrics.tasks_in_top(answers, outs), found.prompt_tokens, fed, wall, outs, reached=reached)

    for name, width in (("superposed", k), ("superposed_wide", WIDE * k)):
        res, wall = _timed(lambda: superposed_decode(PromptState(lm, prompt.text, s.delimiter, s.max_tokens), width))
        outs = [o for o, _ in res.outputs][:k]  # the wide variant keeps more drafts, returns k outputs too
        rows[name] = _row(metrics.tasks_in_top(answers, outs), res.prompt_tokens, res.forward_tokens, wall, outs)
    return {"index": index, "prompt": prompt.text, "tasks": prompt.tasks, "mixture": prompt.mixture,
            "answers": answers, "methods": rows}


def run_bench(lm, s: BenchSettings, run_dir: RunDir, progress: bool = True) -> dict:
    """Bench the prompts ``run_dir`` lacks, then summarise all of them (summary.json/csv); the summary."""
    tasks = s.check()
    k = s.k or len(tasks)
    builder = PromptBuilder(tasks, s.delimiter)
    todo = [i for i in range(s.n_prompts) if i not in run_dir.done()]
    if todo:  # untimed warm-up: the first forward passes of a process are slower (allocations, kernels)
        lm.search(builder.build("uniform", s.n_examples, np.random.default_rng([s.seed, todo[0]]),
                                terminator=s.delimiter).text, k, s.delimiter, s.max_tokens)
    bar = tqdm(total=s.n_prompts, initial=s.n_prompts - len(todo), desc="prompts", disable=not progress)
    for i in todo:
        run_dir.append([bench_prompt(lm, tasks, builder, s, k, i)])
        bar.update(1)
    bar.close()
    records = sorted((r for r in run_dir.records() if r["index"] < s.n_prompts), key=lambda r: r["index"])
    summary, rows = summarize(records, lm.name, [t.name for t in tasks], k, s)
    run_dir.write_summary(summary, rows)
    return summary


def summarize(records: list[dict], model: str, tasks: list[str], k: int, s: BenchSettings) -> tuple[dict, list[dict]]:
    """Per method: mean recall, share of prompts with all K answers, mean costs, and ratios to best-first
    (of the mean wall time and of the mean forward token-steps)."""
    methods = {}
    for m in METHODS:
        rows = [r["methods"][m] for r in records]
        methods[m] = {"recall": float(np.mean([x["recall"] for x in rows])),
                      "all_k_found": float(np.mean([x["recall"] == len(tasks) for x in rows])),
                      "prompt_tokens": float(np.mean([x["prompt_tokens"] for x in rows])),
                      "forward_tokens": float(np.mean([x["forward_tokens"] for x in rows])),
                      "wall_ms": 1000 * float(np.mean([x["wall_s"] for x in rows]))}
        if "reached" in rows[0]:
            methods[m]["reached"] = float(np.mean([x["reached"] for x in rows]))
    best = methods["best_first"]
    for m in methods.values():
        m["wall_vs_best_first"] = m["wall_ms"] / best["wall_ms"]
        m["forward_vs_best_first"] = m["forward_tokens"] / best["forward_tokens"] if best["forward_tokens"] else None
    summary = {"model": model, "tasks": tasks, "k": k, "n_prompts": len(records), "settings": asdict(s),
               "methods": methods}
    return summary, [{"method": name, **m} for name, m in methods.items()]


def format_table(summary: dict) -> str:
    s, K = summary["settings"], len(summary["tasks"])
    lines = [f"{summary['model']}: {', '.join(summary['tasks'])}, k={summary['k']}, "
             f"{summary['n_prompts']} prompts of {s['n_examples']} examples",
             f"{'method':<22} {'answers/K':>9} {'all K':>6} {'prompt tok':>10} {'fwd tok':>8} {'wall ms':>8} "
             f"{'x best-first':>12}"]
    for name, m in summary["methods"].items():
        lines.append(f"{name:<22} {m['recall']:>5.2f}/{K}  {m['all_k_found']:>6.2f} "
                     f"{m['prompt_tokens']:>10.0f} {m['forward_tokens']:>8.1f} {m['wall_ms']:>8.1f} "
                     f"{m['wall_vs_best_first']:>12.2f}")
    best = summary["methods"]["best_first"]
    for name, what in BASELINES.items():
        m = summary["methods"][name]
        forward = f"{m['forward_vs_best_first']:.2f}x" if m["forward_vs_best_first"] is not None else "-"
        lines.append(f"{what}: {m['wall_vs_best_first']:.2f}x best-first's wall time, {forward} its forward "
                     f"token-steps; {m['recall']:.2f} of {K} answers (best-first {best['recall']:.2f})")
    return "\n".join(lines)
