"""One prompt, every task's answer: the exact top-k outputs, each attributed to the task it answers.

``tasks`` (the optional argument of :meth:`LanguageModel.decode_superposed`) says which task each
output answers:

- a family or task name, or a list of task names: the query is read back from the prompt's last
  line (the text after the last ``stop``) with the tasks' input template, and each task's answer
  computed from it (:func:`tasksup.tasks.query_answers`);
- a mapping ``{task name: answer}``, when the answers are known (any prompt format).

An output equal to several tasks' answers is attributed to all of them, names joined by ``"|"``.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence

import numpy as np

from tasksup.errors import TasksupError
from tasksup.scoring import SearchResult
from tasksup.tasks import query_answers, resolve_tasks

DEFAULT_MAX_TOKENS = 32  # longest output the decoder considers, unless the model's context is shorter
TASK_JOIN = "|"


class Decoded(NamedTuple):
    output: str
    probability: float  # exact probability of the output (its most probable token path), stop included
    task: str | None  # the task whose answer it is ("a|b" when several tasks share it), or None


def query_line(prompt: str, stop: str | None) -> str:
    return prompt.rsplit(stop or "\n", 1)[-1]


def task_answers(tasks: str | Sequence[str] | Mapping[str, str] | None, prompt: str,
                 stop: str | None) -> dict[str, str]:
    """``{task: its answer to this prompt's query}`` from the ``tasks`` argument (see module doc)."""
    if tasks is None:
        return {}
    if isinstance(tasks, Mapping):
        bad = [t for t, a in tasks.items() if not isinstance(a, str) or not a]
        if bad:
            raise TasksupError(f"answers must be non-empty strings; check task(s) {bad}")
        return dict(tasks)
    resolved = resolve_tasks(tasks)
    return dict(zip([t.name for t in resolved], query_answers(resolved, query_line(prompt, stop))))


def attribute(outputs: Sequence[tuple[str, float]], answers: Mapping[str, str]) -> list[Decoded]:
    by_answer: dict[str, list[str]] = {}
    for task, answer in answers.items():
        by_answer.setdefault(answer, []).append(task)
    return [Decoded(o, p, TASK_JOIN.join(by_answer[o]) if o in by_answer else None) for o, p in outputs]


def default_max_tokens(lm, prompt: str) -> int:
    if lm.max_context is None or lm.tokenizer is None:  # a remote model may have no local tokenizer
        return DEFAULT_MAX_TOKENS
    room = lm.max_context - len(lm.encode(prompt))
    if room < 1:
        raise TasksupError(f"the prompt fills the model's context of {lm.max_context} tokens; no room to decode")
    return min(DEFAULT_MAX_TOKENS, room)


def decode(lm, prompt: str, k: int = 6, stop: str | None = "\n", max_tokens: int | None = None,
           tasks=None) -> tuple[list[Decoded], dict[str, str], SearchResult]:
    """The k most probable complete outputs with their tasks, the task answers, and the search's cost."""
    answers = task_answers(tasks, prompt, stop)
    found = lm.search(prompt, k, stop, max_tokens or default_max_tokens(lm, prompt))
    return attribute(found.outputs, answers), answers, found


class TaskShare(NamedTuple):
    task: str
    answer: str
    probability: float  # Eq. 3 probability of the complete answer (stop appended)
    share: float  # the same, normalised over the tasks: the implied task mixture


def task_mixture(lm, prompt: str, answers: Mapping[str, str], stop: str | None) -> list[TaskShare]:
    """Each task's exact answer probability and its share of the tasks' total.

    Exact for every task, including those whose answer is not among the top k (for those the
    search alone only bounds the probability by the k-th output's).
    """
    names = list(answers)
    lp = lm.answer_logprobs(prompt, [answers[t] for t in names], terminator=stop)[0]
    shares = np.exp(lp - lp.max())
    shares /= shares.sum()
    return [TaskShare(t, answers[t], float(np.exp(v)), float(s)) for t, v, s in zip(names, lp, shares)]
