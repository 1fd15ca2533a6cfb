"""The one model wrapper every experiment uses: exact answer probabilities and top-k outputs."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from tasksup.errors import TasksupError
from tasksup.results import MODEL_FINGERPRINT
from tasksup.scoring import (ScoringPlan, SearchResult, best_first_many, best_first_outputs, plan_scoring, prompts_pass,
                              run_plans)

WHOLE_HASH_BYTES = 256 << 20  # weight files up to this size are hashed whole
SAMPLE_BYTES = 1 << 20


def weights_digest(path: str) -> str:
    """A content hash of one weight file, so that results of retrained weights never pass for the old ones.

    Files up to 256 MiB are hashed whole (a 6 MB model: ~10 ms); a larger file by its size and three 1 MiB
    samples (start, middle, end) so that a 15 GB LLM is not read in full for every run.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        if size <= WHOLE_HASH_BYTES:
            return f"{size}:{hashlib.file_digest(f, 'sha256').hexdigest()[:16]}"
        digest = hashlib.sha256()
        for start in (0, (size - SAMPLE_BYTES) // 2, size - SAMPLE_BYTES):
            f.seek(start)
            digest.update(f.read(SAMPLE_BYTES))
    return f"{size}:{digest.hexdigest()[:16]}"


def fingerprint(config: dict, path: str, kind: str = MODEL_FINGERPRINT) -> str:
    """A model's identity for run.json: its config and the weight files in ``path`` (if a local folder).

    ``MODEL_FINGERPRINT`` (what runs record): the config without ``_name_or_path``, so that one checkpoint given
    by two paths is one model, and each weight file's :func:`weights_digest`. The older kinds, kept to verify
    old run.json files (``tasksup refingerprint``): ``PATH_FINGERPRINT``, the same with the path in the config;
    ``""``, weight files by size only.
    """
    if kind == MODEL_FINGERPRINT:
        config = {k: v for k, v in config.items() if k != "_name_or_path"}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    path = os.path.expanduser(path)
    if os.path.isdir(path):
        for f in sorted(os.listdir(path)):
            if f.endswith((".safetensors", ".bin", ".gguf")):
                weights = os.path.join(path, f)
                digest.update(f"{f}:{weights_digest(weights) if kind else os.path.getsize(weights)}".encode())
    return kind + digest.hexdigest()[:16]


@dataclass
class Scores:
    """Answer log-probabilities of n prompts x K answers, with per-answer tokenization flags."""

    logprobs: np.ndarray  # [n, K] float64
    boundary_merge: list[list[bool]]  # tok(prompt) is not a prefix of tok(prompt + answer)
    separate_differs: list[list[bool]]  # tok(prompt) + tok(answer) != tok(prompt + answer)


class LanguageModel:
    """A Hugging Face causal LM and its tokenizer.

    ``answer_logprobs``/``answer_probs`` give exact probabilities of given answers; ``top_outputs``
    the exact k most probable complete outputs. See :mod:`tasksup.scoring` for the definitions.
    """

    def __init__(self, model, tokenizer, *, name: str, batch_size: int = 8, gguf_file: str | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.batch_size = batch_size
        self.gguf_file = gguf_file
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = int(pad) if pad is not None else 0
        eos = tokenizer.eos_token_id
        self.eos_ids = {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]) if e is not None}

    # -- tokenization ----------------------------------------------------------------------
    @property
    def max_context(self) -> int | None:
        cfg = self.model.config
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            value = getattr(cfg, key, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    def encode(self, text: str) -> list[int]:
        """Token ids with the tokenizer's special tokens (a BOS where the model expects one)."""
        return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def encode_bare(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _encode_many(self, texts: list[str], special: bool) -> dict[str, list[int]]:
        unique = list(dict.fromkeys(texts))
        if not unique:
            return {}
        return dict(zip(unique, map(list, self.tokenizer(unique, add_special_tokens=special)["input_ids"])))

    def _check_length(self, n_tokens: int) -> None:
        limit = self.max_context
        if limit is not None and n_tokens > limit:
            raise TasksupError(f"prompt and answer need {n_tokens} tokens, longer than the model's context of {limit}")

    # -- scoring ---------------------------------------------------------------------------
    def plan(self, prompts: Sequence[str] | str, answers, terminator: str | None = None,
             tokenization: str = "in_context") -> list[ScoringPlan]:
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if answers and isinstance(answers[0], str):
            answers = [list(answers)] * len(prompts)
        if len(answers) != len(prompts):
            raise TasksupError(f"{len(prompts)} prompts but {len(answers)} answer lists")
        if len({len(a) for a in answers}) > 1:
            raise TasksupError("every prompt needs the same number of answers")
        suffix = terminator or ""
        # every string this batch needs, tokenized in one call (the tokenizer's own batching), then planned
        full = self._encode_many(list(prompts) + [p + x + suffix for p, a in zip(prompts, answers) for x in a
                                                         if isinstance(x, str)], True)
        bare = self._encode_many([x + suffix for a in answers for x in a if isinstance(x, str)], False)
        plans = [plan_scoring(full.__getitem__, bare.__getitem__, p, a, terminator, tokenization)
                 for p, a in zip(prompts, answers)]
        for pl in plans:
            self._check_length(len(pl.prefix) + max(len(r) for r in pl.rows))
        return plans

    def score_plans(self, plans: Sequence[ScoringPlan], batch_size: int | None = None) -> np.ndarray:
        bs = batch_size or self.batch_size
        out = []
        for i in range(0, len(plans), bs):
            out.extend(run_plans(self.model, plans[i:i + bs], self.pad_id))
        return np.stack(out)

    def score(self, prompts: Sequence[str] | str, answers, terminator: str | None = None,
              tokenization: str = "in_context", batch_size: int | None = None) -> Scores:
        """Log-probabilities and tokenization flags; what experiments record per prompt."""
        plans = self.plan(prompts, answers, terminator, tokenization)
        return Scores(self.score_plans(plans, batch_size), [p.boundary_merge for p in plans],
                      [p.separate_differs for p in plans])

    def answer_logprobs(self, prompts: Sequence[str] | str, answers, terminator: str | None = None,
                        tokenization: str = "in_context", batch_size: int | None = None) -> np.ndarray:
        """log P(answer_k | prompt_i) as an [n, K] float64 array.

        ``answers``: one list of K answers per prompt, or one list of K shared by all prompts.
        """
        return self.score(prompts, answers, terminator, tokenization, batch_size).logprobs

    def answer_probs(self, prompts: Sequence[str] | str, answers, terminator: str | None = None,
                     tokenization: str = "in_context", batch_size: int | None = None) -> np.ndarray:
        """P(answer_k | prompt_i) as an [n, K] array (exp of :meth:`answer_logprobs`)."""
        return np.exp(self.answer_logprobs(prompts, answers, terminator, tokenization, batch_size))

    # -- exact top-k -----------------------------------------------------------------------
    def search(self, prompt: str, k: int = 6, stop: str | None = "\n", max_tokens: int = 8) -> SearchResult:
        ids = self.encode(prompt)
        self._check_length(len(ids) + max_tokens)
        return best_first_outputs(self.model, self.tokenizer, ids, k, stop, max_tokens, self.eos_ids)

    def score_and_search(self, prompts: Sequence[str], answers, terminator: str | None = None,
                         tokenization: str = "in_context", k: int = 6, stop: str | None = "\n",
                         max_tokens: int = 8) -> tuple[Scores, list[SearchResult]]:
        """``score(prompts, answers, ...)`` and ``[search(p, k, stop, max_tokens) for p in prompts]``,
        the same numbers, with the prompts run through the network once, together, for both: one left-padded
        pass over the prompts, then their searches sharing every forward (:func:`best_first_many`), then the
        answers scored on the same cache. When a BPE merge crosses a prompt/answer boundary the answers are
        scored from shorter prefixes, run separately. A subclass that scores or searches its own way (a remote
        model) gets exactly its own ``score`` and ``search``.
        """
        if type(self).score is not LanguageModel.score or type(self).search is not LanguageModel.search:
            return (self.score(prompts, answers, terminator, tokenization),
                    [self.search(p, k, stop, max_tokens) for p in prompts])
        plans = self.plan(prompts, answers, terminator, tokenization)
        ids = [plan.prompt for plan in plans]
        for row in ids:
            self._check_length(len(row) + max_tokens)
        with torch.inference_mode():
            state = prompts_pass(self.model, ids, self.pad_id)
            found = best_first_many(self.model, self.tokenizer, ids, k, stop, max_tokens, self.eos_ids, self.pad_id,
                                    prompt_state=state)  # leaves the prompts' cache as it was
            whole = all(plan.prefix == row for plan, row in zip(plans, ids))  # the usual case: no boundary merge
            logprobs = run_plans(self.model, plans, self.pad_id, prefix_state=state if whole else None)
        scores = Scores(np.stack(logprobs), [p.boundary_merge for p in plans], [p.separate_differs for p in plans])
        return scores, found

    def top_outputs(self, prompt: str, k: int = 6, stop: str | None = "\n", max_tokens: int = 8) -> list[tuple[str, float]]:
        """The exact k most probable complete outputs ``[(text, probability), ...]``, best first."""
        return self.search(prompt, k, stop, max_tokens).outputs

    def decode_superposed(self, prompt: str, k: int = 6, stop: str | None = "\n", max_tokens: int | None = None,
                          tasks=None) -> list:
        """Every task's answer from one prompt: ``[(output, probability, task_or_None), ...]``, best first.

        The exact k most probable complete outputs (:meth:`search`). ``tasks``: a family or task
        names (answers computed from the query on the prompt's last line) or ``{task: answer}``;
        see :mod:`tasksup.decoding`. ``max_tokens``: default 32, or what the context leaves.
        """
        from tasksup.decoding import decode

        return decode(self, prompt, k, stop, max_tokens, tasks)[0]

    # -- provenance ------------------------------------------------------------------------
    def identity(self) -> dict:
        """What a results file needs to say which model produced it."""
        cfg = self.model.config
        return {
            "name": self.name,
            "class": type(self.model).__name__,
            "model_type": getattr(cfg, "model_type", None),
            "n_parameters": int(sum(p.numel() for p in self.model.parameters())),
            "dtype": str(next(self.model.parameters()).dtype).removeprefix("torch."),
            "device": str(next(self.model.parameters()).device),
            "commit": getattr(cfg, "_commit_hash", None),
            "gguf_file": self.gguf_file,
            "fingerprint": fingerprint(cfg.to_dict(), self.name),
        }

    def __repr__(self) -> str:
        return f"LanguageModel({self.name!r}, {type(self.model).__name__})"
