"""Metrics of task superposition. Inputs are per-prompt arrays over the K tasks.

- ``other`` = 1 - sum_k P_k: probability on anything but the K task answers.
- ``kl_paper`` = sum_k D_k log(D_k / P_k) over tasks with D_k > 0, with the *raw* answer
  probabilities P (not renormalised): what the paper's released code computes, so the numbers
  compare with its Fig. 6. (Eq. 2 in the paper writes KL(P||D); the code computes KL(D||P).)
- ``kl_normalized``: the same with P renormalised over the K answers, P_k / sum_j P_j, i.e. a proper
  KL divergence between two distributions over tasks (0 iff the model's split over tasks equals D).
- ``r``: how many of the K task answers are among the model's exact top-K complete outputs.
- :func:`family_masses`: for a prompt mixing two tasks A and B of one ordered family (ret1..ret8,
  plus0..plus9), the *superposition* mass P(A) + P(B) against the *averaging* mass on the answers of
  the tasks between them (plus3..plus5 for plus2/plus6), and the mass on the family's other answers.
- :func:`per_prompt_choice`: whether a model splits its probability between the K tasks *within* a
  prompt or commits to one per prompt (calibrated only in the mean over prompts), and which example's
  task its choice follows (the first, the last, the majority's).

Both KLs are computed from log-probabilities, so a task answer with probability 1e-300 does not
need clipping.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
from scipy.special import logsumexp


def other_mass(probs: np.ndarray) -> np.ndarray:
    return 1.0 - np.asarray(probs).sum(-1)


def kl_paper(mixture: Sequence[float], logprobs: np.ndarray) -> np.ndarray:
    """sum_k D_k (log D_k - log P_k), raw P (see module doc). Works on [K] or [n, K] logprobs."""
    d = np.asarray(mixture, dtype=float)
    lp = np.asarray(logprobs, dtype=float)
    on = d > 0
    return (d[on] * (np.log(d[on]) - lp[..., on])).sum(-1)


def kl_normalized(mixture: Sequence[float], logprobs: np.ndarray) -> np.ndarray:
    """KL(D || P / sum P): the paper's formula on the model's distribution over the K tasks."""
    lp = np.asarray(logprobs, dtype=float)
    return kl_paper(mixture, lp - logsumexp(lp, axis=-1, keepdims=True))


def tasks_in_top(answers: Sequence[str], outputs: Iterable[str]) -> int:
    """r: the number of task answers among the given top outputs."""
    top = set(outputs)
    return sum(a in top for a in answers)


def family_masses(answers: Sequence[str], probs: Sequence[float], a: int, b: int) -> dict:
    """Where a prompt mixing tasks A and B of one ordered family puts its probability.

    ``answers``: every family task's answer to the query, in the family's order; ``probs``: the
    model's exact probability of each; ``a``, ``b``: the indices of A and B (their answers differ:
    the prompt builder resamples queries where they coincide).

    - ``p_a``, ``p_b`` and ``superposition_mass`` = p_a + p_b: the tasks in the prompt (a model that
      superposes them puts lambda and 1 - lambda there, summing to 1);
    - ``averaging_mass``: the answers of the tasks strictly between A and B in the family's order
      (plus2/plus6: plus3, plus4, plus5), where a model that averages or interpolates the two tasks
      puts its mass;
    - ``outside_mass``: the answers of the remaining tasks (plus0, plus1, plus7..plus9).

    Each distinct answer string is counted once, in the first group it belongs to (A/B, between,
    outside): a bystander whose answer equals A's or B's adds nothing. The masses add up only if
    the answers are disjoint outputs (ended by a terminator, or none a prefix of another).
    """
    lo, hi = sorted((a, b))
    counted = {answers[a], answers[b]}

    def mass(indices) -> float:
        total = 0.0
        for k in indices:
            if answers[k] not in counted:
                counted.add(answers[k])
                total += float(probs[k])
        return total

    between = mass(range(lo + 1, hi))
    outside = mass(k for k in range(len(answers)) if not lo <= k <= hi)
    return {"p_a": float(probs[a]), "p_b": float(probs[b]), "superposition_mass": float(probs[a]) + float(probs[b]),
            "averaging_mass": between, "outside_mass": outside}


def per_prompt_choice(records: Sequence[dict], threshold: float = 0.9) -> dict | None:
    """Which task a model picks *within* each prompt, over prompts mixing examples of K >= 2 tasks.

    Mean probabilities cannot tell a model that superposes inside each prompt from one that commits to
    a single task per prompt and is calibrated only across prompts: both give P(A) = lambda on average.
    These shares can. A model that weighs the examples within each prompt spreads its probability,
    so ``committed`` is near 0 (where no task holds ``threshold`` of the examples: at lambda = 0.5, in a
    uniform mixture) and its choice follows the majority; one that copies the task of one example (say
    the first) has ``committed`` near 1 and follows that example at 1, whatever the other examples are.

    Counted: records holding examples of at least two of their tasks (``counts``), with
    ``example_tasks`` (the task of each example, in prompt order). Per prompt, the *chosen task* is
    the task whose answer is most probable (argmax over the K tasks' ``logprobs``, else ``probs``);
    a prompt whose two most probable tasks tie exactly has none. Returns None if no record counts, else:

    - ``n_prompts``: the prompts counted; ``threshold``;
    - ``committed``: share whose chosen task holds >= ``threshold`` of the sum of the K tasks'
      probabilities (a prompt with no chosen task is not committed);
    - ``follows_example_1``, ``follows_last_example``: share whose chosen task is the task of the
      first / last example (a prompt with no chosen task follows none);
    - ``follows_example_by_position``: the same for examples 1, 2, ... (up to the shortest prompt);
    - ``n_majority_prompts``: the prompts with a unique majority task (one task has more examples
      than any other); ``follows_majority``: among them, the share whose chosen task is that task
      (None if there is none, as in a uniform mixture);
    - ``n_tied``: prompts with no chosen task.

    Two tasks (Fig. 3) are the case K = 2: the prompts of lambda strictly between 0 and 1.
    """
    mixed = [r for r in records if "example_tasks" in r and sum(c > 0 for c in r["counts"]) >= 2]
    if not mixed:
        return None
    committed, chosen = [], []
    for r in mixed:
        k = len(r["tasks"])
        lp = np.asarray(r["logprobs"][:k] if "logprobs" in r else np.log(np.asarray(r["probs"][:k], dtype=float)),
                        dtype=float)
        top = np.sort(lp)[::-1]
        unique = bool(np.isfinite(top[0]) and top[0] > top[1])
        chosen.append(r["tasks"][int(np.argmax(lp))] if unique else None)
        committed.append(unique and float(np.exp(top[0] - logsumexp(lp))) >= threshold)
    m = min(len(r["example_tasks"]) for r in mixed)
    majority = []
    for r, c in zip(mixed, chosen):
        counts = np.asarray(r["counts"])
        if (counts == counts.max()).sum() == 1:
            majority.append(c is not None and c == r["tasks"][int(counts.argmax())])

    def follows(position: int) -> float:
        return float(np.mean([c is not None and r["example_tasks"][position] == c for r, c in zip(mixed, chosen)]))

    return {"n_prompts": len(mixed), "threshold": threshold, "committed": float(np.mean(committed)),
            "follows_example_1": follows(0), "follows_last_example": follows(-1),
            "follows_example_by_position": [follows(i) for i in range(m)],
            "n_majority_prompts": len(majority), "follows_majority": float(np.mean(majority)) if majority else None,
            "n_tied": sum(c is None for c in chosen)}


CHOICE_COLUMNS = ("committed", "follows_example_1", "follows_last_example", "follows_majority")


def choice_columns(choice: dict | None) -> dict:
    """The per-prompt shares of :func:`per_prompt_choice` as flat CSV columns (None where not defined).

    Also reads the format summaries had before K tasks (``follows_example``: a list by position, and
    every prompt of one run has the same number of examples, so its last entry is the last example).
    """
    if not choice:
        return dict.fromkeys(CHOICE_COLUMNS)
    if "follows_example_1" not in choice and "follows_example" in choice:
        by_position = choice["follows_example"]
        choice = {**choice, "follows_example_1": by_position[0], "follows_last_example": by_position[-1]}
    return {key: choice.get(key) for key in CHOICE_COLUMNS}


def quartiles(values: Sequence[float]) -> dict:
    v = np.asarray(values, dtype=float)
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return {"mean": float(v.mean()), "median": float(med), "q1": float(q1), "q3": float(q3)}


def bootstrap_mean_ci(values: Sequence[float], confidence: float = 0.95, n_resamples: int = 10_000,
                      seed: int = 0) -> dict:
    """A seeded BCa bootstrap confidence interval for the mean (``scipy.stats.bootstrap``).

    BCa corrects the bias and skew of the bootstrap distribution, which matters for KL (a long right
    tail) and for r (bounded, often piled up at K). Constant values get the zero-width interval
    (BCa is undefined there).
    """
    from scipy.stats import bootstrap

    v = np.asarray(values, dtype=float)
    if np.ptp(v) == 0:
        low = high = float(v[0])
    else:
        res = bootstrap((v,), np.mean, confidence_level=confidence, n_resamples=n_resamples, method="BCa",
                        rng=np.random.default_rng(seed))
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return {"ci_low": low, "ci_high": high}
