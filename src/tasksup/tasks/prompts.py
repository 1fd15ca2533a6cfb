"""Mixture prompts: K tasks, an in-context distribution D, m examples and a query.

One builder serves scoring (prompts with a query), training (single-task sequences with answer
spans for the loss of Eq. 1) and task vectors (single-task prompts and lone queries).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Callable, Iterable, Sequence

import numpy as np

from tasksup.errors import TasksupError
from tasksup.tasks.registry import Input, Task

MAX_QUERY_DRAWS = 10_000
SUM_TOLERANCE = 1e-6


def _as_float(v, where: str) -> float:
    """A mixture weight: a number or an exact fraction written as a string ("1/12")."""
    if isinstance(v, bool):
        raise TasksupError(f"{where}: {v!r} is not a probability")
    if isinstance(v, (int, float)):
        return float(v)
    try:
        return float(Fraction(str(v).strip()))
    except (ValueError, ZeroDivisionError):
        raise TasksupError(f"{where}: {v!r} is not a number or a fraction like '1/12'") from None


def normalize_mixture(mixture: str | Sequence, k: int) -> np.ndarray:
    """Validate an in-context task distribution D over k tasks.

    ``"uniform"`` gives 1/k each. A list must have length k, non-negative entries, and sum to 1
    within 1e-6; it is then divided by its sum so that it sums to 1 exactly in floating point.
    Write weights that do not terminate in decimal as fractions ("1/12"), not rounded decimals.
    """
    if isinstance(mixture, str):
        if mixture != "uniform":
            raise TasksupError(f"mixture must be 'uniform' or a list of {k} probabilities, got {mixture!r}")
        return np.full(k, 1.0 / k)
    d = np.array([_as_float(v, "mixture") for v in mixture], dtype=float)
    if d.shape != (k,):
        raise TasksupError(f"mixture has {d.size} entries but there are {k} tasks")
    if not (d >= 0).all():  # also NaN
        raise TasksupError(f"mixture {d.tolist()} has a negative entry or one that is not a number")
    if abs(d.sum() - 1.0) > SUM_TOLERANCE:
        raise TasksupError(f"mixture {d.tolist()} sums to {d.sum():.6g}, not 1 (write 1/12 rather than 0.083)")
    return d / d.sum()


def example_counts(mixture: np.ndarray, m: int) -> list[int]:
    """Exact per-task example counts summing to m, by the largest-remainder method.

    Each task gets floor(m * D_k); the remaining examples go to the largest fractional parts,
    ties to the earlier task. Every task with D_k > 0 must get at least one example.
    """
    if m < 1:
        raise TasksupError(f"the number of examples must be at least 1, got {m}")
    exact = np.asarray(mixture, dtype=float) * m
    counts = np.floor(exact + 1e-9).astype(int)
    remainder = m - int(counts.sum())
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[:remainder]:
        counts[i] += 1
    starved = [i for i, (d, c) in enumerate(zip(mixture, counts)) if d > 0 and c == 0]
    if starved:
        raise TasksupError(f"m={m} examples is too small for mixture {np.round(mixture, 4).tolist()}: "
                           f"task(s) {starved} would get no example")
    return counts.tolist()


@dataclass
class MixturePrompt:
    """A prompt of in-context examples from several tasks followed by one query."""

    text: str  # examples joined by the delimiter, then the delimiter and the query input
    tasks: list[str]
    mixture: list[float]
    counts: list[int]
    example_tasks: list[str]  # which task produced each example, in prompt order
    query: Input
    query_text: str
    answers: list[str]  # g_k(query) for every task, in task order
    collision_resamples: int  # query draws rejected because two answers coincided (or were prefixes)
    leak_resamples: int  # query draws rejected because the input appeared among the examples

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class TrainingSequence:
    """m examples of one task; ``answer_spans`` are the answers' character ranges in ``text``; ``noisy[i]``:
    example i's answer is not ``task``'s answer to its input (``training_sequence``'s ``noise`` or
    ``task_noise``), and so not a loss target; ``example_tasks[i]``: the task that answered example i."""

    text: str
    task: str
    answer_spans: list[tuple[int, int]]
    noisy: list[bool]
    example_tasks: list[str]


def answers_collide(answers: Sequence[str], allow_prefixes: bool) -> bool:
    """Two answers are equal, or (without a terminator) one is a prefix of another."""
    for i, a in enumerate(answers):
        for j, b in enumerate(answers):
            if i != j and (a == b or (not allow_prefixes and b.startswith(a))):
                return True
    return False


class PromptBuilder:
    """Builds mixture prompts over tasks that share one input space."""

    def __init__(self, tasks: Sequence[Task], delimiter: str = "\n"):
        if not tasks:
            raise TasksupError("a prompt needs at least one task")
        spaces = {t.inputs.name for t in tasks}
        if len(spaces) != 1:
            raise TasksupError(f"tasks {[t.name for t in tasks]} do not share an input space ({sorted(spaces)})")
        if not delimiter:
            raise TasksupError("the delimiter must not be empty")
        self.tasks = list(tasks)
        self.space = tasks[0].inputs
        self.delimiter = delimiter

    def example(self, task: Task, x: Input) -> str:
        return self.space.format(x) + task.answer(x)

    def query_text(self, x: Input) -> str:
        return self.space.format(x)

    def build(self, mixture: str | Sequence, m: int, rng: np.random.Generator, *,
              order: str = "random", terminator: str | None = None) -> MixturePrompt:
        """A prompt with m examples distributed as ``mixture`` and a query whose answers are distinct.

        ``order="random"`` shuffles the examples (seeded by ``rng``); ``"blocked"`` keeps each task's
        examples together, in task order. The query's input never appears among the examples. With
        no ``terminator`` an answer that is a prefix of another also counts as a collision, because
        the shorter answer's probability would include the longer one's.
        """
        d = normalize_mixture(mixture, len(self.tasks))
        counts = example_counts(d, m)
        labels = np.repeat(np.arange(len(self.tasks)), counts)
        if order == "random":
            labels = rng.permutation(labels)
        elif order != "blocked":
            raise TasksupError(f"order must be 'random' or 'blocked', got {order!r}")
        inputs = [self.space.sample(rng) for _ in labels]
        lines = [self.example(self.tasks[t], x) for t, x in zip(labels, inputs)]
        seen = {self.space.format(x) for x in inputs}
        query, qtext, answers, collisions, leaks = self.draw_query(rng, seen, terminator)
        text = self.delimiter.join(lines + [qtext])
        return MixturePrompt(text, [t.name for t in self.tasks], d.tolist(), counts,
                             [self.tasks[t].name for t in labels], query, qtext, answers, collisions, leaks)

    def draw_query(self, rng: np.random.Generator, seen: set[str], terminator: str | None = None):
        """A query input not written in ``seen`` whose task answers do not collide.

        Returns ``(query, query_text, answers, collision_resamples, leak_resamples)``.
        """
        collisions = leaks = 0
        for _ in range(MAX_QUERY_DRAWS):
            query = self.space.sample(rng)
            qtext = self.space.format(query)
            if qtext in seen:
                leaks += 1
                continue
            answers = [t.answer(query) for t in self.tasks]
            if answers_collide(answers, allow_prefixes=terminator is not None):
                collisions += 1
                continue
            return query, qtext, answers, collisions, leaks
        raise TasksupError(f"no query with distinct answers for tasks {[t.name for t in self.tasks]} "
                           f"in {MAX_QUERY_DRAWS} draws")

    def training_sequence(self, task: Task, m: int, rng: np.random.Generator,
                          max_chars: int | None = None, noise: float = 0.0, task_noise: float = 0.0,
                          others: Sequence[Task] = ()) -> TrainingSequence:
        """m examples of one task, each followed by the delimiter (Eq. 1's training sequence s).

        With ``max_chars``, the sequence stops before the first example that would take it past that
        many characters (but holds at least two): tasks with short examples then get more of them,
        and every sequence is about as long as the context it trains.

        With ``noise`` > 0, each example's answer is, with that probability, the same task's answer to
        another input (a wrong label; another task's answer only by coincidence); ``noisy`` marks those examples.
        ``noise`` = 0 draws nothing more from ``rng``: the sequences are those of a run without it.

        With ``task_noise`` > 0, each example is, with that probability, answered by one of ``others``
        (other tasks over the same inputs) drawn uniformly: a right answer of another task, recorded in
        ``example_tasks`` and marked ``noisy``. ``task_noise`` = 0 draws nothing more from ``rng``.
        """
        lines = _SequenceLines(self.delimiter, max_chars)
        for i in range(m):
            x = self.space.sample(rng)
            answering = task
            if task_noise > 0 and others and rng.random() < task_noise:
                answering = others[int(rng.integers(len(others)))]
            prefix, answer = self.space.format(x), answering.answer(x)
            replaced = noise > 0 and rng.random() < noise
            if replaced:
                answer = self._wrong_answer(answering, answer, rng)
            if not lines.add(prefix, answer, answering.name, replaced or answering is not task):
                break
        return lines.sequence(task.name)

    def _wrong_answer(self, task: Task, answer: str, rng: np.random.Generator, tries: int = 100) -> str:
        for _ in range(tries):
            other = task.answer(self.space.sample(rng))
            if other != answer:
                return other
        raise TasksupError(f"task {task.name!r} gives {answer!r} to every input drawn: example_noise needs "
                           "a task with more than one answer")


def check_fits(lm, prompts: Callable[[int], Iterable[tuple[str, Sequence[str]]]], m: int, *,
               terminator: str | None = None, generate: int = 0, fix: str = "--set n_examples={m}") -> None:
    """Stop with a one-line error, before any computation, when a prompt that will run does not fit ``lm``'s
    context; the error names the largest m whose prompts fit and ``fix`` (formatted with it).

    ``prompts(k)``: the (text, answers) pairs the run will score with k examples (they are deterministic from the
    seed, so these are exactly the prompts it runs). A prompt needs its tokens, special ones included, and then its
    longest answer with ``terminator`` or ``generate`` tokens (a search or decoding budget), whichever is more; the
    answer is tokenized on its own (tokens merging across the boundary only make the sequence shorter). The largest
    m is found by bisection over k < m. A model with no known context or no local tokenizer (a remote model) is
    not checked.
    """
    limit = lm.max_context
    if limit is None or getattr(lm, "tokenizer", None) is None:
        return
    special = len(lm.encode(""))

    def need(k: int) -> int:
        pairs = list(prompts(k))
        texts = lm.tokenizer([t for t, _ in pairs], add_special_tokens=False)["input_ids"]
        ends = lm.tokenizer([a + (terminator or "") for _, ans in pairs for a in ans], add_special_tokens=False)
        answers, start = [], 0
        for _, ans in pairs:
            answers.append(max(len(ids) for ids in ends["input_ids"][start:start + len(ans)]))
            start += len(ans)
        return special + max(len(t) + max(a, generate) for t, a in zip(texts, answers))

    needed = need(m)
    if needed <= limit:
        return
    low, high = 0, m  # need(low) fits (0: nothing known to fit), need(high) does not
    while high - low > 1:
        mid = (low + high) // 2
        try:
            fits_mid = need(mid) <= limit
        except TasksupError:  # too few examples to build this run's prompts
            fits_mid = False
        low, high = (mid, high) if fits_mid else (low, mid)
    fits = f"the largest m that fits is {low} (set {fix.format(m=low)})" if low >= 1 else "not even one example fits"
    raise TasksupError(f"n_examples={m} needs {needed} tokens but {lm.name}'s context is {limit}: {fits}")


class _SequenceLines:
    """The examples of a training sequence as they are written: text, answer spans, noisy flags, tasks; ``add``
    refuses (False) the example that would take the text past ``max_chars`` once two examples are written."""

    def __init__(self, delimiter: str, max_chars: int | None):
        self.delimiter, self.max_chars = delimiter, max_chars
        self.parts, self.spans, self.noisy, self.tasks, self.pos = [], [], [], [], 0

    def add(self, prefix: str, answer: str, task: str, noisy: bool) -> bool:
        line = prefix + answer + self.delimiter
        if self.max_chars is not None and len(self.parts) >= 2 and self.pos + len(line) > self.max_chars:
            return False
        self.spans.append((self.pos + len(prefix), self.pos + len(prefix) + len(answer)))
        self.noisy.append(noisy)
        self.tasks.append(task)
        self.parts.append(line)
        self.pos += len(line)
        return True

    def sequence(self, name: str) -> TrainingSequence:
        return TrainingSequence("".join(self.parts), name, self.spans, self.noisy, self.tasks)


def mixed_training_sequence(builders: Sequence[PromptBuilder], weights: Sequence[float], m: int,
                            rng: np.random.Generator, max_chars: int | None = None) -> TrainingSequence:
    """m examples, each of a task drawn from ``weights`` (one task per builder, ``builders[k].tasks[0]``; the
    tasks may read different inputs), each followed by the delimiter: a sequence of a pretraining-like corpus
    (``TrainConfig.mix_share``). Every answer is its own task's right answer (none ``noisy``); ``task`` is the
    drawn tasks' names joined by "+"; ``max_chars`` as in ``PromptBuilder.training_sequence``."""
    lines = _SequenceLines(builders[0].delimiter, max_chars)
    for _ in range(m):
        builder = builders[int(rng.choice(len(builders), p=weights))]
        task = builder.tasks[0]
        x = builder.space.sample(rng)
        if not lines.add(builder.space.format(x), task.answer(x), task.name, False):
            break
    return lines.sequence("+".join(b.tasks[0].name for b in builders))
