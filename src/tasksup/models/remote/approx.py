"""Approximate answer probabilities from top-N next-token log-probs: a beam, and a lower bound.

For APIs that do not return the prompt's log-probabilities (gpt-3.5-turbo-instruct and most hosted
models), the paper's method: grow the answers token by token from the prompt, asking at every
partial answer for the N most probable next tokens, keeping a partial answer only while the token it
needs is among them, and multiplying the probabilities along the way. Every number is a product of
true conditional probabilities of paths that were found, so it can only under-count:

1. top-N: a path is lost as soon as one of its tokens ranks below N at its step;
2. width: at each depth only the ``beam_width`` most probable partial answers of a prompt are
   extended (all answers of the prompt compete for the slots);
3. floor: a partial answer whose probability falls below ``min_prob`` is dropped;
4. length: answers longer than ``max_tokens`` (default 32) tokens get nothing.

With a local tokenizer (``canonical`` paths) each answer follows exactly the tokens the exact
scorer scores (the in_context tokenization), so the result is a lower bound of the exact value,
equal to it when nothing above was cut. Two more cases give 0 there: an answer whose tokenization
merges with the prompt's last token (the exact value then divides by the prompt's own tail, which
top-N lists cannot bound), and a token whose text another vocabulary token also produces (the
server keys its top-N by text, so we cannot tell which of the two it means -- in SentencePiece
vocabularies every single character has such a byte-fallback twin).

Without a tokenizer (``text`` paths, the API case) partial answers are texts and the server
tokenizes prompt + text at every step; every token sequence that spells the answer is summed,
as in the paper for GPT-3.5 (details and caveats in docs/remote.md).
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from tasksup.errors import TasksupError
from tasksup.models.remote.model import top_logprobs
from tasksup.models.wrapper import Scores

MAX_TOKENS = 32


def _prune(frontier: list, width: int, floor: float, stats: Counter) -> list:
    kept = [n for n in frontier if n[1] >= floor]
    stats["dropped_floor"] += len(frontier) - len(kept)
    kept.sort(key=lambda n: -n[1])
    stats["dropped_width"] += max(0, len(kept) - width)
    return kept[:width]


def _run_beam(lm, roots: list[list], expand_request, children, stats: Counter) -> None:
    """Depth by depth over all prompts at once, so that the requests of one depth run concurrently."""
    floor = math.log(lm.min_prob) if lm.min_prob > 0 else -math.inf
    frontiers = [_prune(r, lm.beam_width, floor, stats) for r in roots]
    for _ in range(MAX_TOKENS):
        jobs = [(i, node) for i, f in enumerate(frontiers) for node in f]
        if not jobs:
            return
        responses = lm.client.complete_many([expand_request(i, node) for i, node in jobs], lm.progress)
        stats["requests"] += len(jobs)
        nxt = [[] for _ in frontiers]
        for (i, node), resp in zip(jobs, responses):
            nxt[i].extend(children(i, node, top_logprobs(resp)))
        frontiers = [_prune(f, lm.beam_width, floor, stats) for f in nxt]
    stats["dropped_length"] += sum(len(f) for f in frontiers)


def approximate_scores(lm, prompts: list[str], answers: list[list[str]], terminator: str | None,
                       tokenization: str) -> Scores:
    if tokenization != "in_context":
        raise TasksupError("approximate mode scores tokenization='in_context' only")
    if len({len(a) for a in answers}) > 1 or len(answers) != len(prompts):
        raise TasksupError("every prompt needs the same number of answers")
    for a in (a for ans in answers for a in ans):
        if not isinstance(a, str) or a == "":
            raise TasksupError(f"answers must be non-empty strings, got {a!r}")
    stats = Counter()
    if lm.tokenizer is not None:
        out = _canonical(lm, prompts, answers, terminator or "", stats)
    else:
        out = _text(lm, prompts, answers, terminator or "", stats)
    for key, value in stats.items():
        lm.beam_stats[key] = lm.beam_stats.get(key, 0) + int(value)
    return out


# -- canonical paths (local tokenizer) ----------------------------------------------------------


def ambiguous_texts(lm) -> set[str]:
    """Token texts that more than one vocabulary token decodes to (after a fixed left context)."""
    if getattr(lm, "_ambiguous", None) is None:
        tok = lm.tokenizer
        anchor = lm.encode_bare("x")[-1:]
        base = tok.decode(anchor, clean_up_tokenization_spaces=False)
        texts = Counter(tok.decode(anchor + [i], clean_up_tokenization_spaces=False)[len(base):]
                        for i in range(len(tok)))
        lm._ambiguous = {t for t, n in texts.items() if n > 1 or "\ufffd" in t or t == ""}
    return lm._ambiguous


def _canonical(lm, prompts, answers, suffix, stats) -> Scores:
    ambiguous = ambiguous_texts(lm)
    n, K = len(prompts), len(answers[0])
    result = np.full((n, K), -np.inf)
    merges, targets, prompt_ids = [], [], []
    for prompt, ans in zip(prompts, answers):
        p = lm.encode(prompt)
        joint = [lm.encode(prompt + a + suffix) for a in ans]
        merges.append([f[:len(p)] != p for f in joint])
        targets.append([tuple(f[len(p):]) if f[:len(p)] == p else None for f in joint])
        prompt_ids.append(p)
        lm._check_length(max(len(f) for f in joint))
    decode = lambda ids: lm.tokenizer.decode(ids, clean_up_tokenization_spaces=False)  # noqa: E731
    prompt_text = [decode(p) for p in prompt_ids]

    def context(i, path):
        ids = prompt_ids[i] + list(path)
        if lm.send_ids:
            return ids
        text = prompts[i] + decode(ids)[len(prompt_text[i]):]
        return text if lm.encode(text) == ids else None  # the server must re-tokenize it to these ids

    def expand_request(i, node):
        return lm._top_body(node[2])

    def children(i, node, top):
        path, logp, _ = node
        ids = prompt_ids[i] + list(path)
        base = decode(ids)
        kids = []
        for t in sorted({tg[len(path)] for tg in targets[i] if tg and len(tg) > len(path) and tg[:len(path)] == path}):
            piece = decode(ids + [t])[len(base):]
            if piece in ambiguous:
                stats["ambiguous"] += 1
                continue
            if piece not in top:
                stats["not_in_top"] += 1
                continue
            child, child_lp = path + (t,), logp + top[piece]
            for k, tg in enumerate(targets[i]):
                if tg == child:
                    result[i, k] = child_lp
            if any(tg and len(tg) > len(child) and tg[:len(child)] == child for tg in targets[i]):
                ctx = context(i, child)
                if ctx is None:
                    stats["not_retokenizable"] += 1
                else:
                    kids.append((child, child_lp, ctx))
        return kids

    roots = [[((), 0.0, context(i, ()))] if any(targets[i]) else [] for i in range(n)]
    _run_beam(lm, roots, expand_request, children, stats)
    return Scores(result, merges, [[None] * K for _ in range(n)])


# -- text paths (the server tokenizes) ----------------------------------------------------------


def _text(lm, prompts, answers, suffix, stats) -> Scores:
    n, K = len(prompts), len(answers[0])
    goals = [[a + suffix for a in ans] for ans in answers]
    found = np.full((n, K), -np.inf)

    def expand_request(i, node):
        return lm._top_body(prompts[i] + node[0])

    def children(i, node, top):
        text, logp = node
        kids = []
        for piece, lp in top.items():
            if not piece:  # an end-of-text or a fragment of a multi-byte character: spells nothing
                continue
            new, new_lp = text + piece, logp + lp
            for k, g in enumerate(goals[i]):
                if new.startswith(g) and not text.startswith(g):
                    found[i, k] = np.logaddexp(found[i, k], new_lp)
            if any(g.startswith(new) and len(g) > len(new) for g in goals[i]):
                kids.append((new, new_lp))
        return kids

    _run_beam(lm, [[("", 0.0)] for _ in range(n)], expand_request, children, stats)
    return Scores(found, [[None] * K for _ in range(n)], [[None] * K for _ in range(n)])
