"""Eq. 1's training data: single-task sequences, their token ids and the loss mask.

A training sequence is m examples of one task drawn uniformly from the family, written by
:meth:`PromptBuilder.training_sequence` (the same format the experiments' prompts use). With
``TrainConfig.mix_share`` a share of the sequences mixes tasks (``mixed_training_sequence``), each
answer a target of its own task, under a declared holdout (``MixedCorpus``). The loss
targets are the tokens of the answers of examples 2..m -- and, with ``target_delimiter``, the
delimiter that ends each of those answers (a deviation from Eq. 1 taken literally: without it the
model never learns where an answer stops, and exact top-k outputs ended by the delimiter would be
meaningless). Character spans are mapped to tokens through the tokenizer's offsets, so nothing
assumes one character per token.

Every sequence is a pure function of (seed, step, index): resuming needs no data-loader state and
the run is reproducible on any number of processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from tasksup.errors import TasksupError
from tasksup.tasks import MixturePrompt, PromptBuilder, Task, TrainingSequence, mixed_training_sequence, resolve_tasks

TRAIN_STREAM, EVAL_STREAM, OFFSET_STREAM, DROPOUT_STREAM = 1, 2, 3, 4  # numpy seed sequences [seed, stream, ...] keep training and eval data apart
CHAR_SAMPLES = 4096  # examples per task drawn to collect the characters a family can produce


def sampled_lines(tasks: Sequence[Task], delimiter: str, seed: int = 0, n: int = CHAR_SAMPLES) -> list[str]:
    """n examples of each task, each with its delimiter, written by the prompt builder (stream [seed, 0]):
    what the tokenizer, the context and the line-structured init are sized from."""
    rng = np.random.default_rng([seed, 0])
    lines = []
    for task in tasks:
        builder = PromptBuilder([task], delimiter)
        lines += [builder.example(task, builder.space.sample(rng)) + delimiter for _ in range(n)]
    return lines


def family_chars(tasks: Sequence[Task], delimiter: str, seed: int = 0, n: int = CHAR_SAMPLES) -> str:
    """Every character that n sampled examples of each task (and the delimiter) contain."""
    return "".join(sorted(set(delimiter).union(*sampled_lines(tasks, delimiter, seed, n))))


def longest_example(tasks: Sequence[Task], delimiter: str, seed: int = 0, n: int = CHAR_SAMPLES) -> int:
    """The longest example plus delimiter (in characters) among n samples per task."""
    return max(map(len, sampled_lines(tasks, delimiter, seed, n)))


def example_lengths(tasks: Sequence[Task], delimiter: str, tokenizer, seed: int = 0, n: int = CHAR_SAMPLES) -> set[int]:
    """The lengths in tokens of n sampled examples (each with its delimiter) of each task."""
    texts = sampled_lines(tasks, delimiter, seed, n)
    return {len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]}


def line_length(tasks: Sequence[Task], delimiter: str, tokenizer, seed: int = 0, n: int = CHAR_SAMPLES) -> int:
    """The length in tokens of every example plus delimiter, when the family's format fixes it.

    ``position_init: lines`` needs it; a family whose lines vary (plus: 2- or 3-digit answers) is an error.
    """
    lengths = example_lengths(tasks, delimiter, tokenizer, seed, n)
    if len(lengths) != 1:
        raise TasksupError(f"position_init: lines needs examples of one fixed length, but this family's lines are "
                           f"{min(lengths)}-{max(lengths)} tokens long; use position_init: random or sinusoidal")
    return lengths.pop()


def task_probabilities(tasks: Sequence[Task], weights: dict[str, float]) -> list[float] | None:
    """The probability of each task per training sequence from ``TrainConfig.task_weights`` (relative weights,
    1 for a task not named); None when no weights are given (uniform, drawn as before weights existed)."""
    if not weights:
        return None
    names = [t.name for t in tasks]
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise TasksupError(f"task_weights names {unknown}, which are not among the trained tasks {names}")
    w = np.array([float(weights.get(n, 1.0)) for n in names])
    return (w / w.sum()).tolist()


class MixedCorpus:
    """Which tasks a mixed training sequence holds (``TrainConfig.mix_*``): 2..max_tasks of them, uniformly many,
    drawn one by one with the sequences' task probabilities among those the holdout still allows (at most
    ``per_group`` tasks of one group), then their weights w ~ Dirichlet(alpha). After c_k examples of task k in n,
    the best guess of the next example's task is (c_k + alpha) / (n + K alpha): linear in the in-context shares."""

    def __init__(self, tasks: Sequence[Task], spec: Sequence, groups: Sequence[Sequence[str]] | None, *, share: float,
                 alpha: float, max_tasks: int, per_group: int, task_probs: Sequence[float] | None = None):
        self.share, self.alpha, self.max_tasks, self.per_group = share, alpha, max_tasks, per_group
        self.names = [t.name for t in tasks]
        self.group = self.group_of(groups if groups is not None else [[name] for name in spec])
        self.base = np.ones(len(tasks)) if task_probs is None else np.asarray(task_probs, dtype=float)
        sizes = np.bincount(self.group)
        room = int(np.minimum(sizes, per_group).sum())
        if room < 2:
            raise TasksupError(f"the holdout (mix_groups, mix_per_group {per_group}) lets no two tasks share a sequence: "
                               "lower mix_share to 0 or loosen the holdout")
        if max_tasks > room:
            raise TasksupError(f"mix_max_tasks is {max_tasks}, but the holdout (mix_groups, mix_per_group {per_group}) "
                               f"lets at most {room} tasks share a sequence")

    def group_of(self, groups: Sequence[Sequence[str]]) -> np.ndarray:
        """The group index of each task; a task in no group gets one of its own."""
        group = {}
        for g, names in enumerate(groups):
            for name in names:
                try:
                    members = [t.name for t in resolve_tasks(name, one_space=False)]
                except TasksupError:
                    members = []
                if not members or set(members) - set(self.names):
                    raise TasksupError(f"mix_groups names {name!r}, which is not among the trained tasks {self.names}")
                for t in members:
                    if group.setdefault(t, g) != g:
                        raise TasksupError(f"mix_groups puts task {t!r} in two groups")
        extra = iter(range(len(groups), len(groups) + len(self.names)))
        return np.array([group[n] if n in group else next(extra) for n in self.names])

    def draw(self, rng: np.random.Generator) -> tuple[list[int], np.ndarray]:
        """The indices of a mixed sequence's tasks (sorted) and their weights."""
        chosen: list[int] = []
        for _ in range(int(rng.integers(2, self.max_tasks + 1))):
            full = np.bincount(self.group[chosen], minlength=self.group.max() + 1) >= self.per_group
            allowed = self.base * ~full[self.group]
            allowed[chosen] = 0
            chosen.append(int(rng.choice(len(allowed), p=allowed / allowed.sum())))
        chosen.sort()
        return chosen, rng.dirichlet(np.full(len(chosen), self.alpha))


def mixed_corpus(cfg, tasks: Sequence[Task]) -> MixedCorpus | None:
    """The ``TrainConfig``'s mixed corpus (its holdout checked against ``tasks``); None without ``mix_share``."""
    if not cfg.mix_share:
        return None
    spec = [cfg.tasks] if isinstance(cfg.tasks, str) else cfg.tasks
    return MixedCorpus(tasks, spec, cfg.mix_groups, share=cfg.mix_share, alpha=cfg.mix_alpha,
                       max_tasks=cfg.mix_max_tasks, per_group=cfg.mix_per_group,
                       task_probs=task_probabilities(tasks, cfg.task_weights))


def token_mask(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> list[bool]:
    """Which tokens overlap any of the character spans ``[start, end)``."""
    tok = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    span = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    overlap = (tok[:, None, 0] < span[None, :, 1]) & (tok[:, None, 1] > span[None, :, 0])
    return overlap.any(1).tolist()


def example_index(offsets: Sequence[tuple[int, int]], line_ends: Sequence[int]) -> np.ndarray:
    """The example (line) each token belongs to, from the character offset where it starts; -1 for the
    special tokens a tokenizer adds (empty offsets)."""
    tok = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    index = np.searchsorted(np.asarray(line_ends), tok[:, 0], side="right")
    return np.where(tok[:, 0] == tok[:, 1], -1, index)


def dropout_mask(examples: np.ndarray, width: int, p: float, rng: np.random.Generator) -> torch.Tensor:
    """[width, width] bool, True where query token q may attend to key token k: causal, and each example
    hidden from each later example with probability p (``TrainConfig.example_dropout``). A token always sees
    its own example and the special tokens; positions past ``examples`` (padding) see everything before them."""
    n = int(examples.max()) + 1 if len(examples) else 0
    keep = rng.random((n, n)) >= p  # keep[j, i]: example j sees example i (only i < j is used)
    ex = np.full(width, -1)
    ex[:len(examples)] = examples
    q, k = ex[:, None], ex[None, :]
    visible = (k == -1) | (q == -1) | (q == k) | ((k < q) & keep[np.maximum(q, 0), np.maximum(k, 0)])
    return torch.from_numpy(visible) & torch.ones(width, width, dtype=torch.bool).tril()


def encode_with_targets(tokenizer, texts: Sequence[str],
                        spans: Sequence[Sequence[tuple[int, int]]]) -> list[tuple[list[int], list[bool]]]:
    """Token ids and target flags of each text (one batched tokenizer call)."""
    enc = tokenizer(list(texts), add_special_tokens=True, return_offsets_mapping=True)
    rows = []
    for text, text_spans, ids, offsets in zip(texts, spans, enc["input_ids"], enc["offset_mapping"]):
        if tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids:
            bad = sorted({text[s:e] for i, (s, e) in zip(ids, offsets) if i == tokenizer.unk_token_id})
            raise TasksupError(f"the tokenizer has no token for {bad}: add them to extra_chars")
        # special tokens added by the tokenizer have empty offsets (0, 0) and never overlap a span
        rows.append((list(ids), token_mask(offsets, text_spans)))
    return rows


@dataclass
class Batch:
    input_ids: torch.Tensor  # [b, T], right-padded
    targets: torch.Tensor  # [b, T] bool: token t is a loss target (predicted from positions < t); never padding
    n_answers: int  # answers scored in the batch: Eq. 1 averages the answers' cross-entropy over these
    position_ids: torch.Tensor | None = None  # [b, T]; None = 0..T-1 (see TrainConfig.position_offset)
    attention_mask: torch.Tensor | None = None  # [b, 1, T, T] bool; None = causal (see TrainConfig.example_dropout)


def collate(rows: Sequence[tuple[list[int], list[bool]]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token rows: (ids, targets). Causal attention never lets padding reach a real token."""
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    tgt = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (row, mask) in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row)
        tgt[i, :len(row)] = torch.tensor(mask)
    return ids, tgt


class SequenceSource:
    """Training batches and held-out single-task eval prompts for a list of tasks (over one or several
    input spaces: every eval prompt, and every sequence but the mixed ones of ``mixed``, holds one task's examples)."""

    def __init__(self, tasks: Sequence[Task], tokenizer, *, n_examples: int, delimiter: str, target_delimiter: bool,
                 seed: int, max_length: int | None = None, random_offsets: bool = False, first_answer: bool = False,
                 max_chars: int | None = None, task_probs: Sequence[float] | None = None, noise: float = 0.0,
                 task_noise: float = 0.0, example_dropout: float = 0.0, mixed: MixedCorpus | None = None):
        self.builders = [PromptBuilder([task], delimiter) for task in tasks]
        self.delimiter = delimiter
        self.tasks = list(tasks)
        self.tokenizer = tokenizer
        self.m = n_examples
        self.target_delimiter = target_delimiter
        self.first_answer = first_answer
        self.seed = seed
        self.max_length = max_length
        self.random_offsets = random_offsets
        self.max_chars = max_chars  # TrainConfig.sequence_chars: up to m examples, as many as fit this many characters
        self.task_probs = task_probs  # task_probabilities(); None = uniform
        self.noise = noise  # TrainConfig.example_noise: wrong answers in context, never loss targets
        self.task_noise = task_noise  # TrainConfig.task_noise: examples answered by another task over the same inputs
        self.others = [[o for o in self.tasks if o is not t and o.inputs == t.inputs] for t in self.tasks]
        self.example_dropout = example_dropout  # TrainConfig.example_dropout: examples hidden from later ones
        self.mixed = mixed  # TrainConfig.mix_share and the holdout; None or share 0: one task per sequence (no draw)
        # Batches are right-padded and never attend to or predict padding, so any id would do; EOS rather
        # than the pad id keeps transformers from warning that no attention mask was passed.
        self.pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0

    @classmethod
    def from_config(cls, cfg, tasks: Sequence[Task], tokenizer, max_length: int | None = None) -> "SequenceSource":
        """The training sequences of a ``TrainConfig`` (the training loop's, and the one that measures a run's
        tokens per sequence afterwards)."""
        probs = task_probabilities(tasks, cfg.task_weights)
        return cls(tasks, tokenizer, n_examples=cfg.n_examples, delimiter=cfg.delimiter,
                   target_delimiter=cfg.target_delimiter, seed=cfg.seed, max_length=max_length,
                   random_offsets=cfg.position_offset == "random", first_answer=cfg.target_first_answer,
                   max_chars=cfg.sequence_chars or None, task_probs=probs, noise=cfg.example_noise,
                   task_noise=cfg.task_noise, example_dropout=cfg.example_dropout, mixed=mixed_corpus(cfg, tasks))

    def target_spans(self, answer_spans: Sequence[tuple[int, int]], noisy: Sequence[bool]) -> list[tuple[int, int]]:
        """Answers 2..m (Eq. 1; 1..m with ``first_answer``) but the ``noisy`` ones, each extended over its
        delimiter when ``target_delimiter``."""
        extra = len(self.delimiter) if self.target_delimiter else 0
        return [(s, e + extra) for i, ((s, e), wrong) in enumerate(zip(answer_spans, noisy))
                if i >= self.first_target and not wrong]

    @property
    def first_target(self) -> int:
        """Index of the first answer that is a loss target."""
        return 0 if self.first_answer else 1

    def sequence(self, step: int, index: int) -> tuple[list[int], list[bool]]:
        return self.encode(step, [index])[0]

    def encode(self, step: int, indices: Sequence[int]) -> list[tuple[list[int], list[bool]]]:
        """Token ids and Eq. 1 target flags of training sequences ``indices`` of ``step``."""
        return self._encode(step, indices)[0]

    def training_sequences(self, step: int, indices: Sequence[int]) -> list[TrainingSequence]:
        """Training sequences ``indices`` of ``step``, as text (each a function of seed, step and index alone)."""
        seqs = []
        for index in indices:
            rng = np.random.default_rng([self.seed, TRAIN_STREAM, step, index])
            if self.mixed is not None and self.mixed.share and rng.random() < self.mixed.share:
                chosen, weights = self.mixed.draw(rng)
                seqs.append(mixed_training_sequence([self.builders[k] for k in chosen], weights, self.m, rng,
                                                    self.max_chars))
                continue
            k = int(rng.integers(len(self.tasks)) if self.task_probs is None else rng.choice(len(self.tasks), p=self.task_probs))
            seqs.append(self.builders[k].training_sequence(self.tasks[k], self.m, rng, self.max_chars, self.noise,
                                                           self.task_noise, self.others[k]))
        return seqs

    def _encode(self, step: int, indices: Sequence[int]) -> tuple[list[tuple[list[int], list[bool]]], int,
                                                                 list[TrainingSequence]]:
        """The rows of ``encode``, the number of answers they score and the sequences they encode."""
        seqs = self.training_sequences(step, indices)
        texts = [seq.text for seq in seqs]
        spans = [self.target_spans(seq.answer_spans, seq.noisy) for seq in seqs]
        rows = encode_with_targets(self.tokenizer, texts, spans)
        longest = max(len(ids) for ids, _ in rows)
        if self.max_length is not None and longest > self.max_length:
            raise TasksupError(f"a training sequence has {longest} tokens, more than the context of {self.max_length}: "
                               "raise n_positions or lower n_examples")
        return rows, sum(len(s) for s in spans), seqs

    def batch(self, step: int, indices: Sequence[int]) -> Batch:
        rows, n_answers, seqs = self._encode(step, indices)
        ids, tgt = collate(rows, self.pad_id)
        positions = None
        if self.random_offsets:  # sequence i starts at a uniform position in [0, max_length - T]
            width = ids.shape[1]
            offsets = [int(np.random.default_rng([self.seed, OFFSET_STREAM, step, i]).integers(self.max_length - width + 1))
                       for i in indices]
            positions = torch.tensor(offsets)[:, None] + torch.arange(width)[None, :]
        return Batch(ids, tgt, n_answers, positions, self.dropout_masks(step, indices, seqs, ids.shape[1]))

    def dropout_masks(self, step: int, indices: Sequence[int], seqs: Sequence[TrainingSequence],
                      width: int) -> torch.Tensor | None:
        """The [b, 1, T, T] attention masks of ``example_dropout`` for ``seqs`` (sequences ``indices`` of ``step``;
        stream [seed, 4, step, i]); None without it."""
        if not self.example_dropout:
            return None
        offsets = self.tokenizer([s.text for s in seqs], add_special_tokens=True,
                                 return_offsets_mapping=True)["offset_mapping"]
        masks = []
        for i, seq, offs in zip(indices, seqs, offsets):
            line_ends = [e + len(self.delimiter) for _, e in seq.answer_spans]
            rng = np.random.default_rng([self.seed, DROPOUT_STREAM, step, i])
            masks.append(dropout_mask(example_index(offs, line_ends), width, self.example_dropout, rng))
        return torch.stack(masks)[:, None]

    def eval_prompt(self, task_index: int, index: int, m: int) -> MixturePrompt:
        """Held-out prompt ``index`` for one task: m examples of it and a query (seeds apart from training)."""
        rng = np.random.default_rng([self.seed, EVAL_STREAM, task_index, index])
        return self.builders[task_index].build("uniform", m, rng)

    def eval_rows(self, task_index: int, n: int, m: int) -> list[tuple[list[int], list[bool]]]:
        """Eval prompts followed by the answer and delimiter; the targets are the answer and delimiter."""
        prompts = [self.eval_prompt(task_index, i, m) for i in range(n)]
        texts = [p.text + p.answers[0] + self.delimiter for p in prompts]
        return encode_with_targets(self.tokenizer, texts, [[(len(p.text), len(t))] for p, t in zip(prompts, texts)])
