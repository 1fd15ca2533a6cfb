"""Generation collapse (paper §8), measured on mixture prompts whose answers span several tokens.

Every probability here is of a *complete* output: the answer followed by the delimiter (which is
also the stop string), so that Eq. 3's numbers, sampling frequencies and decoded outputs are about
the same events. "Shares" are those probabilities normalised over the K tasks; entropies are of
the shares, in bits (at most log2 K).

1. ``commitment``: the task shares before decoding vs after the first generated token u. For each
   distinct first token u of the answers (their in-context tokenization), the answers consistent
   with u are re-scored on ``prompt + u`` (measured); by the chain rule this must equal the
   before-shares restricted to those tasks and renormalised (``conditioning_error`` records the
   difference). Greedy takes the most probable u; temperature-1 sampling is averaged *exactly*
   over u (no Monte Carlo), restricted to first tokens that begin some answer (``on_task_mass``).
   Answers that share their first tokens ("quarante-deux" / "quarantadue") commit later:
   ``greedy_commit_depth`` is the number of greedy tokens after which at most one answer is still
   consistent with them, and ``greedy_commit_task`` that answer's task (None: greedy left them all).
2. ``sampling``: N temperature-T samples per prompt; the frequency of each task's answer and of
   anything else ("other", including samples not complete within ``max_tokens``) against the
   model's probabilities; KL(frequencies || model) in nats, with the value pure sampling noise
   gives, about (C - 1) / 2N for C categories. Greedy returns one output, so one task, every time.
3. ``drift``: the model's own answer is appended as a new example, with a fresh query, n_turns
   times; the task shares at every turn, and how the share of the task committed to moves. The
   calibrated reference counts the appended answers as examples of the task they answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
from tqdm import tqdm

from tasksup import metrics
from tasksup.decoding import PromptState, sample_outputs
from tasksup.errors import TasksupError
from tasksup.experiments import CommonConfig, model_name
from tasksup.tasks import PromptBuilder, check_fits, example_counts, example_inputs, normalize_mixture, resolve_tasks

PARTS = ("commitment", "sampling", "drift")
DRIFT_DECODERS = ("greedy", "sample")


@dataclass
class Config(CommonConfig):
    experiment: str = "collapse"
    tasks: str | list[str] = "translate"  # families with multi-token answers: translate, add_translate, plus
    mixture: str | list = "uniform"
    n_examples: int = 60  # m; the paper's Fig. 2 uses 20 examples per task (60 for K=3)
    n_prompts: int = 100
    order: str = "random"
    delimiter: str = "\n"  # separates examples and ends an output (the stop string)
    max_tokens: int = 32  # longest output decoded, in tokens, the delimiter included
    parts: list[str] = field(default_factory=lambda: list(PARTS))
    n_samples: int = 200  # N samples per prompt (part 2)
    temperature: float = 1.0  # of the samples in part 2
    n_turns: int = 5  # part 3: own answers appended, one per turn
    drift_decoder: str = "greedy"  # greedy | sample (temperature 1): how the model answers at each turn
    title: str = ""


def check(cfg: Config) -> None:
    tasks = resolve_tasks(cfg.tasks)
    example_counts(normalize_mixture(cfg.mixture, len(tasks)), cfg.n_examples)
    PromptBuilder(tasks, cfg.delimiter)
    unknown = sorted(set(cfg.parts) - set(PARTS))
    if unknown or not cfg.parts:
        raise TasksupError(f"parts must be a non-empty subset of {list(PARTS)}, got {cfg.parts}")
    if cfg.drift_decoder not in DRIFT_DECODERS:
        raise TasksupError(f"drift_decoder must be one of {DRIFT_DECODERS}, got {cfg.drift_decoder!r}")


def entropy_bits(shares) -> float:
    s = np.asarray(shares, dtype=float)
    s = s[s > 0]
    return float(-(s * np.log2(s)).sum()) + 0.0  # + 0.0: no "-0.0" for a one-task distribution


def shares_of(logprobs) -> np.ndarray:
    lp = np.asarray(logprobs, dtype=float)
    p = np.exp(lp - lp.max())
    return p / p.sum()


def task_of(output: str | None, answers: list[str]) -> int | None:
    return answers.index(output) if output in answers else None


# -- part 1 ------------------------------------------------------------------------------------


def answer_tokens(lm, prompt_ids: list[int], prompt: str, answer: str) -> list[int] | None:
    """The tokens an answer adds to the prompt (in context), None when a merge crosses the boundary."""
    joint = lm.encode(prompt + answer)
    return joint[len(prompt_ids):] if joint[:len(prompt_ids)] == prompt_ids else None


def commitment_depth(greedy_path: list[int], tokens: list[list[int] | None]) -> tuple[int, int | None]:
    """After how many greedy tokens at most one answer is still consistent, and which (None: none is).

    By the chain rule the task is decided there; no decoder that emits one token path can delay it.
    """
    for depth in range(1, len(greedy_path) + 1):
        alive = [k for k, t in enumerate(tokens) if t is not None and t[:depth] == greedy_path[:depth]]
        if len(alive) <= 1:
            return depth, (alive[0] if alive else None)
    return len(greedy_path), None


def commitment(lm, cfg: Config, prompt: str, answers: list[str], logprobs: np.ndarray, state: PromptState,
               greedy_path: list[int]) -> dict:
    before = shares_of(logprobs)
    root = torch.log_softmax(state.last_logits.double(), -1).cpu().numpy()
    tokens = [answer_tokens(lm, state.ids, prompt, a + cfg.delimiter) for a in answers]
    first = [t[0] if t else None for t in tokens]
    depth, committed_to = commitment_depth(greedy_path, tokens)
    branches = []
    for u in dict.fromkeys(t for t in first if t is not None):
        text = state.reader.text([u])
        members = [k for k, t in enumerate(first) if t == u and answers[k].startswith(text)]
        if not members:
            continue
        rest = [answers[k][len(text):] + cfg.delimiter for k in members]
        measured = lm.answer_logprobs(prompt + text, rest, terminator=None)[0]
        after, conditioned = np.zeros(len(answers)), np.zeros(len(answers))
        after[members] = shares_of(measured)
        conditioned[members] = before[members] / before[members].sum()
        branches.append({"token": text, "token_id": int(u), "p": float(np.exp(root[u])), "tasks": members,
                         "after": after.tolist(), "conditioned": conditioned.tolist()})
    greedy_id = int(np.argmax(root))
    greedy = next((b for b in branches if b["token_id"] == greedy_id), None)
    mass = sum(b["p"] for b in branches)
    weights = [b["p"] / mass for b in branches] if mass > 0 else []
    return {
        "first_tokens": [state.reader.text([t]) if t is not None else None for t in first],
        "branches": branches,
        "greedy_token": state.reader.text([greedy_id]),
        "greedy_on_task": greedy is not None,
        "on_task_mass": mass,
        "entropy_before": entropy_bits(before),
        "entropy_after_greedy": entropy_bits(greedy["after"]) if greedy else None,
        "entropy_after_sampling": float(sum(w * entropy_bits(b["after"]) for w, b in zip(weights, branches)))
        if branches else None,
        "top_share_before": float(before.max()),
        "top_share_after_greedy": float(max(greedy["after"])) if greedy else None,
        "top_share_after_sampling": float(sum(w * max(b["after"]) for w, b in zip(weights, branches)))
        if branches else None,
        "greedy_commit_depth": depth,
        "greedy_commit_task": committed_to,
        "answer_tokens": [len(t) if t else None for t in tokens],
        "conditioning_error": max((float(np.abs(np.subtract(b["after"], b["conditioned"])).max()) for b in branches),
                                  default=0.0),
    }


# -- part 2 ------------------------------------------------------------------------------------


def sampling(cfg: Config, answers: list[str], probs: np.ndarray, state: PromptState, greedy: str | None,
             rng) -> dict:
    gen = sample_outputs(state, cfg.n_samples, cfg.temperature, rng)
    k = len(answers)
    counts = np.zeros(k + 1, dtype=int)
    for o in gen.outputs:
        t = task_of(o, answers)
        counts[k if t is None else t] += 1
    model = np.append(probs, max(0.0, 1.0 - probs.sum()))
    freq = counts / counts.sum()
    on = freq > 0
    greedy_task = task_of(greedy, answers)
    distinct = {o for o in gen.outputs if o is not None}
    return {
        "n": cfg.n_samples, "temperature": cfg.temperature, "counts": counts.tolist(), "freq": freq.tolist(),
        "model": model.tolist(), "incomplete": sum(o is None for o in gen.outputs),
        "kl": float((freq[on] * (np.log(freq[on]) - np.log(np.clip(model[on], 1e-300, None)))).sum()),
        "kl_noise": (int((model > 0).sum()) - 1) / (2 * cfg.n_samples),
        "tasks_seen": int((counts[:k] > 0).sum()), "distinct_outputs": len(distinct),
        "greedy_output": greedy, "greedy_task": greedy_task,
        "greedy_kl": float(-np.log(max(model[k if greedy_task is None else greedy_task], 1e-300))),
        "forward_tokens": gen.forward_tokens,
    }


# -- part 3 ------------------------------------------------------------------------------------


def drift(lm, cfg: Config, builder: PromptBuilder, prompt, rng) -> dict:
    text, answers, query = prompt.text, prompt.answers, prompt.query_text
    in_context = np.array(prompt.counts, dtype=float)
    seen = example_inputs(text, cfg.delimiter, builder.space.separator)
    turns = []
    for turn in range(cfg.n_turns + 1):
        lp = lm.answer_logprobs(text, answers, terminator=cfg.delimiter)[0]
        shares = shares_of(lp)
        rec = {"turn": turn, "query": query, "answers": answers, "logprobs": lp.tolist(), "shares": shares.tolist(),
               "entropy": entropy_bits(shares), "other": float(metrics.other_mass(np.exp(lp))),
               "in_context": (in_context / in_context.sum()).tolist()}
        turns.append(rec)
        if turn == cfg.n_turns:
            break
        state = PromptState(lm, text, cfg.delimiter, cfg.max_tokens)
        gen = sample_outputs(state, 1, 0.0 if cfg.drift_decoder == "greedy" else 1.0, rng)
        complete = gen.outputs[0] is not None
        # nothing complete within max_tokens: what was generated is appended all the same
        output = gen.outputs[0] if complete else state.reader.text(gen.paths[0])
        rec.update({"output": output, "complete": complete, "task": task_of(output, answers) if complete else None})
        if rec["task"] is not None:
            in_context[rec["task"]] += 1
        seen.add(query)
        _, query, answers, _, _ = builder.draw_query(rng, seen, terminator=cfg.delimiter)
        text = text + output + cfg.delimiter + query
    committed = [t.get("task") for t in turns[:-1]]
    return {"turns": turns, "committed": committed}


# -- driver ------------------------------------------------------------------------------------


def build_prompt(cfg: Config, builder: PromptBuilder, index: int):
    rng = np.random.default_rng([cfg.seed, index])
    return builder.build(cfg.mixture, cfg.n_examples, rng, order=cfg.order, terminator=cfg.delimiter)


def prompt_record(lm, cfg: Config, builder: PromptBuilder, index: int) -> dict:
    p = build_prompt(cfg, builder, index)
    scores = lm.score(p.text, p.answers, terminator=cfg.delimiter)
    lp = scores.logprobs[0]
    probs = np.exp(lp)
    longest = max(len(lm.encode_bare(a + cfg.delimiter)) for a in p.answers)
    if longest > cfg.max_tokens:
        raise TasksupError(f"max_tokens={cfg.max_tokens} is shorter than an answer with its delimiter "
                           f"({longest} tokens); raise max_tokens")
    rec = {"index": index, "prompt": p.text, "tasks": p.tasks, "mixture": p.mixture, "counts": p.counts,
           "answers": p.answers, "logprobs": lp.tolist(), "probs": probs.tolist(),
           "other": float(metrics.other_mass(probs)), "shares": shares_of(lp).tolist(),
           "boundary_merge": scores.boundary_merge[0]}
    state = PromptState(lm, p.text, cfg.delimiter, cfg.max_tokens)
    greedy = sample_outputs(state, 1, temperature=0.0)
    if "commitment" in cfg.parts:
        rec["commitment"] = commitment(lm, cfg, p.text, p.answers, lp, state, greedy.paths[0])
    if "sampling" in cfg.parts:
        rec["sampling"] = sampling(cfg, p.answers, probs, state, greedy.outputs[0],
                                   np.random.default_rng([cfg.seed, index, 2]))
    if "drift" in cfg.parts:
        rec["drift"] = drift(lm, cfg, builder, p, np.random.default_rng([cfg.seed, index, 3]))
    return rec


def run(cfg: Config, lm, run_dir, progress: bool = True) -> None:
    builder = PromptBuilder(resolve_tasks(cfg.tasks), cfg.delimiter)
    check_fits(lm, lambda k: ((p.text, p.answers) for i in range(cfg.n_prompts)
                              for p in [build_prompt(replace(cfg, n_examples=k), builder, i)]),
               cfg.n_examples, terminator=cfg.delimiter, generate=cfg.max_tokens)
    done = run_dir.done()
    todo = [i for i in range(cfg.n_prompts) if i not in done]
    bar = tqdm(total=cfg.n_prompts, initial=cfg.n_prompts - len(todo), desc="prompts", disable=not progress)
    for i in todo:
        run_dir.append([prompt_record(lm, cfg, builder, i)])
        bar.update(1)
    bar.close()


# -- summary and figures -----------------------------------------------------------------------


def _q(values) -> dict | None:
    values = [v for v in values if v is not None]
    return metrics.quartiles(values) if values else None


def _summarize_commitment(cs: list[dict], k: int) -> dict:
    return {
        "entropy_max": float(np.log2(k)),
        "entropy_before": _q(c["entropy_before"] for c in cs),
        "entropy_after_greedy": _q(c["entropy_after_greedy"] for c in cs),
        "entropy_after_sampling": _q(c["entropy_after_sampling"] for c in cs),
        "top_share_before": _q(c["top_share_before"] for c in cs),
        "top_share_after_greedy": _q(c["top_share_after_greedy"] for c in cs),
        "top_share_after_sampling": _q(c["top_share_after_sampling"] for c in cs),
        "greedy_on_task": float(np.mean([c["greedy_on_task"] for c in cs])),
        "on_task_mass": _q(c["on_task_mass"] for c in cs),
        "max_conditioning_error": max(c["conditioning_error"] for c in cs),
        # depth: over the prompts where greedy commits to a task (not where it leaves every answer)
        "greedy_commit_depth": _q(c["greedy_commit_depth"] for c in cs if c["greedy_commit_task"] is not None),
        "greedy_commits_at_first_token": float(np.mean([c["greedy_commit_depth"] == 1 and
                                                        c["greedy_commit_task"] is not None for c in cs])),
        "greedy_commits_to_a_task": float(np.mean([c["greedy_commit_task"] is not None for c in cs])),
    }


def _summarize_sampling(ss: list[dict], k: int) -> dict:
    freq = np.mean([s["freq"] for s in ss], axis=0)
    model = np.mean([s["model"] for s in ss], axis=0)
    greedy = np.bincount([k if s["greedy_task"] is None else s["greedy_task"] for s in ss], minlength=k + 1) / len(ss)
    on = freq > 0
    return {
        "n_samples": ss[0]["n"], "temperature": ss[0]["temperature"],
        "mean_model": model.tolist(), "mean_freq": freq.tolist(), "greedy_freq": greedy.tolist(),
        "kl": _q(s["kl"] for s in ss), "kl_noise": float(np.mean([s["kl_noise"] for s in ss])),
        "kl_of_means": float((freq[on] * np.log(freq[on] / np.clip(model[on], 1e-300, None))).sum()),
        "greedy_kl": _q(s["greedy_kl"] for s in ss),
        "tasks_seen_sampling": _q(s["tasks_seen"] for s in ss),
        "tasks_seen_greedy": float(np.mean([s["greedy_task"] is not None for s in ss])),
        "incomplete": float(np.mean([s["incomplete"] / s["n"] for s in ss])),
    }


def _summarize_drift(ds: list[dict]) -> dict:
    n_turns = len(ds[0]["turns"])
    first = [(d, d["committed"][0]) for d in ds if d["committed"][0] is not None]
    share_first = [[d["turns"][j]["shares"][c] for d, c in first] for j in range(n_turns)]
    steps, calibrated = [], []
    for j in range(1, n_turns):
        pairs = [(d["turns"][j], d["turns"][j - 1], c) for d in ds for c in [d["committed"][j - 1]] if c is not None]
        steps.append(_q(now["shares"][c] - before["shares"][c] for now, before, c in pairs))
        # what a calibrated model's share would move: the task's share of the examples
        calibrated.append(float(np.mean([now["in_context"][c] - before["in_context"][c] for now, before, c in pairs]))
                          if pairs else None)
    return {
        "n_prompts_first_committed": len(first),
        "share_first_committed": [_q(v) for v in share_first],
        "in_context_first_committed": [float(np.mean([d["turns"][j]["in_context"][c] for d, c in first]))
                                       if first else None for j in range(n_turns)],
        "step_toward_committed": steps,
        "calibrated_step_toward_committed": calibrated,
        "entropy": [_q(d["turns"][j]["entropy"] for d in ds) for j in range(n_turns)],
        # mass off every task's answer per turn: rises if the growing prompt leaves what the model handles
        "other": [_q(d["turns"][j]["other"] for d in ds) for j in range(n_turns)],
        "same_task_every_turn": float(np.mean([d["committed"][0] is not None and len(set(d["committed"])) == 1
                                               for d in ds])),
        "complete_outputs": float(np.mean([t["complete"] for d in ds for t in d["turns"][:-1]])),
    }


def summarize(records: list[dict], cfg: Config) -> tuple[dict, list[dict]]:
    tasks = records[0]["tasks"]
    k = len(tasks)
    summary = {"n_prompts": len(records), "tasks": tasks, "mixture": records[0]["mixture"],
               "mean_probs": np.mean([r["probs"] for r in records], axis=0).tolist(),
               "mean_shares": np.mean([r["shares"] for r in records], axis=0).tolist(),
               "other": _q(r["other"] for r in records)}
    rows = [{"part": "scores", "quantity": "other", **summary["other"]}]
    for part, fn in (("commitment", _summarize_commitment), ("sampling", _summarize_sampling)):
        if part in records[0]:
            summary[part] = fn([r[part] for r in records], k)
            rows += [{"part": part, "quantity": key, **v} for key, v in summary[part].items() if isinstance(v, dict)]
    if "drift" in records[0]:
        summary["drift"] = d = _summarize_drift([r["drift"] for r in records])
        for key in ("share_first_committed", "entropy", "other"):
            rows += [{"part": "drift", "quantity": f"{key}[turn {j}]", **v} for j, v in enumerate(d[key]) if v]
        rows += [{"part": "drift", "quantity": f"step_toward_committed[turn {j + 1}]", **v}
                 for j, v in enumerate(d["step_toward_committed"]) if v]
    return summary, rows


def plot(records: list[dict], summary: dict, cfg: Config, out_dir) -> list:
    from tasksup import plots

    title = cfg.title or f"{model_name(cfg.model)}: {', '.join(summary['tasks'])}"
    paths = []
    if "commitment" in summary:
        paths += plots.collapse_commitment(summary["commitment"], title, out_dir / "collapse_commitment")
    if "sampling" in summary:
        paths += plots.collapse_sampling(summary["sampling"], summary["tasks"], title, out_dir / "collapse_sampling")
    if "drift" in summary:
        paths += plots.collapse_drift(summary["drift"], title, out_dir / "collapse_drift")
    return paths
