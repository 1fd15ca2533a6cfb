"""A model behind an OpenAI-compatible completions server, with the interface of :class:`LanguageModel`.

Exact mode (default) asks for the log-probabilities of the prompt's own tokens (``echo`` +
``logprobs`` + ``max_tokens: 1``; vLLM and llama.cpp's Python server do this) and computes the
core scorer's definitions from them (:mod:`tasksup.scoring`):

* with a local ``tokenizer``, :func:`tasksup.scoring.plan_scoring` tokenizes exactly as the local
  scorer does (boundary merges, ``separate``), and each plan row is sent as token ids (or, to a server
  that takes only text, as the text it is the tokenization of -- the server's token count is then
  checked against ours for every request);
* without one, the server tokenizes: for every prompt we send the prompt and prompt + answer, and
  log P(answer | prompt) = log P(tok(prompt + answer)) - log P(tok(prompt)) on the server's tokens,
  both sums taken from their longest common token prefix.

Approximate mode (servers that only return top-N next-token log-probs) is in :mod:`.approx`; the
search over top-N lists in :mod:`.search`. See docs/remote.md.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence
from urllib.parse import urlparse

import numpy as np

from tasksup.errors import TasksupError
from tasksup.models.remote.client import CompletionsClient
from tasksup.models.wrapper import LanguageModel, Scores
from tasksup.scoring import common_prefix_len

MODES = ("exact", "approximate")
OPENAI_API = "https://api.openai.com/v1"
PROMPT_IDS = ("auto", "always", "never")
PROBE_TEXT = "Hello world\n1+1=2\n"


def _choice(resp: dict) -> dict:
    try:
        return resp["choices"][0]
    except (KeyError, IndexError, TypeError):
        raise TasksupError(f"remote server answered without choices: {json.dumps(resp)[:200]}") from None


def echoed_prompt(resp: dict) -> tuple[list[str], list[float | None]]:
    """The prompt's tokens and their log-probabilities from an ``echo`` response (generated tokens dropped)."""
    lp = _choice(resp).get("logprobs") or {}
    tokens, values = lp.get("tokens"), lp.get("token_logprobs")
    if tokens is None or values is None:
        raise TasksupError("remote server returned no prompt log-probabilities (echo + logprobs unsupported?); "
                           "use remote mode 'approximate'")
    generated = int((resp.get("usage") or {}).get("completion_tokens", 1))
    n = len(tokens) - generated
    return list(tokens[:n]), [None if v is None else float(v) for v in values[:n]]


def top_logprobs(resp: dict) -> dict[str, float]:
    """The first generated position's top-N ``{token text: log-probability}``."""
    lp = _choice(resp).get("logprobs") or {}
    tops = lp.get("top_logprobs") or []
    if not tops or tops[0] is None:
        raise TasksupError("remote server returned no top log-probabilities for the next token")
    return {str(k): float(v) for k, v in tops[0].items()}


def _sum_tail(values: list[float | None], n: int) -> float:
    tail = values[len(values) - n:] if n else []
    if any(v is None for v in tail):
        raise TasksupError("remote server gave no log-probability for the prompt's first token, which this answer "
                           "needs (a merge at the first token); prepend a BOS or use a longer prompt")
    return float(sum(tail))


class _ServedElsewhere:
    """Stands in for ``LanguageModel.model``: code that needs the weights in this process fails clearly."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str):
        raise TasksupError(f"{self._name} is served remotely, but this needs the model's weights in this process "
                           f"(model.{attr}); run it on a local model")


class RemoteLanguageModel(LanguageModel):
    """``openai:MODEL`` at ``base_url``; ``score``/``search``/``top_outputs``/... as on :class:`LanguageModel`."""

    def __init__(self, client: CompletionsClient, model: str, *, tokenizer=None, tokenizer_name: str | None = None,
                 mode: str = "exact", prompt_ids: str = "auto", top_logprobs: int = 5, beam_width: int = 16,
                 min_prob: float = 1e-6, max_context: int | None = None, batch_size: int = 8, progress: bool = False):
        if mode not in MODES:
            raise TasksupError(f"remote mode must be one of {MODES}, got {mode!r}")
        if prompt_ids not in PROMPT_IDS:
            raise TasksupError(f"remote prompt_ids must be one of {PROMPT_IDS}, got {prompt_ids!r}")
        if prompt_ids == "always" and tokenizer is None:
            raise TasksupError("remote prompt_ids='always' needs a tokenizer (remote setting `tokenizer`)")
        if top_logprobs < 1 or beam_width < 1 or not 0 <= min_prob < 1:
            raise TasksupError("remote settings need top_logprobs >= 1, beam_width >= 1 and 0 <= min_prob < 1")
        name = f"openai:{model}"
        if tokenizer is not None:
            super().__init__(None, tokenizer, name=name, batch_size=batch_size)
        else:
            self.tokenizer, self.name, self.batch_size, self.gguf_file = None, name, batch_size, None
            self.pad_id, self.eos_ids = 0, set()
        self.model = _ServedElsewhere(name)
        self.client, self.served_model, self.tokenizer_name = client, model, tokenizer_name
        self.mode, self.top_n, self.beam_width, self.min_prob = mode, top_logprobs, beam_width, min_prob
        self.progress = progress
        self.server_info = self._server_info()
        self._max_context = max_context or self.server_info.get("max_model_len")
        self.send_ids = False
        self.echo_offset = 0  # leading tokens (a BOS) that the server's echo leaves out
        if mode == "exact":
            self._probe(prompt_ids)
        self.beam_stats: dict[str, int] = {}
        self.search_stats = {"searches": 0, "certified": 0}

    # -- set-up ----------------------------------------------------------------------------
    def _server_info(self) -> dict:
        listed = self.client.request("GET", "models").get("data") or []
        ids = [m.get("id") for m in listed]
        for m in listed:
            if m.get("id") == self.served_model:
                return {k: v for k, v in m.items() if k in ("id", "owned_by", "max_model_len", "root")}
        if ids:
            raise TasksupError(f"remote server {self.client.base_url} does not serve {self.served_model!r} "
                               f"(it serves: {', '.join(map(str, ids))})")
        return {}

    def _echo_body(self, prompt: str | list[int]) -> dict:
        return {"model": self.served_model, "prompt": prompt, "max_tokens": 1, "echo": True, "logprobs": 1,
                "temperature": 0.0}

    def _top_body(self, prompt: str | list[int]) -> dict:
        return {"model": self.served_model, "prompt": prompt, "max_tokens": 1, "logprobs": self.top_n,
                "temperature": 0.0}

    def _probe(self, prompt_ids: str) -> None:
        """Check that echo works, whether token-id prompts are accepted, and how the echo treats a BOS."""
        if self.tokenizer is None:
            echoed_prompt(self.client.complete(self._echo_body(PROBE_TEXT)))
            return
        ids = self.encode(PROBE_TEXT)
        resp = None
        if prompt_ids != "never":
            try:
                # one attempt: a server that cannot parse token ids may answer 422 or 500
                resp = self.client.request("POST", "completions", self._echo_body(ids), retry=False)
                self.send_ids = True
            except TasksupError:
                if prompt_ids == "always":
                    raise
        if resp is None:
            resp = self.client.complete(self._echo_body(PROBE_TEXT))
        n = len(echoed_prompt(resp)[0])
        self.echo_offset = len(ids) - n
        if self.echo_offset not in (0, 1):
            raise TasksupError(f"the server tokenized the probe {PROBE_TEXT!r} into {n} tokens, the local tokenizer "
                               f"{self.tokenizer_name!r} into {len(ids)}: not the server's tokenizer")

    # -- LanguageModel interface -----------------------------------------------------------
    @property
    def max_context(self) -> int | None:
        return self._max_context

    def encode(self, text: str) -> list[int]:
        if self.tokenizer is None:
            raise TasksupError(f"{self.name} has no local tokenizer (remote setting `tokenizer`)")
        return super().encode(text)

    def score(self, prompts: Sequence[str] | str, answers, terminator: str | None = None,
              tokenization: str = "in_context", batch_size: int | None = None) -> Scores:
        """Exact (or, in approximate mode, lower-bound) log-probabilities; see the module docstring."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if answers and isinstance(answers[0], str):
            answers = [list(answers)] * len(prompts)
        if not answers or not all(answers) or len(answers) != len(prompts):
            raise TasksupError(f"{len(prompts)} prompts need as many non-empty answer lists")
        if self.mode == "approximate":
            from tasksup.models.remote.approx import approximate_scores

            return approximate_scores(self, prompts, answers, terminator, tokenization)
        if self.tokenizer is not None:
            return self._score_planned(prompts, answers, terminator, tokenization)
        return self._score_server_tokens(prompts, answers, terminator, tokenization)

    def _score_planned(self, prompts, answers, terminator, tokenization) -> Scores:
        if tokenization == "separate" and not self.send_ids:
            raise TasksupError("tokenization='separate' needs a server that accepts token-id prompts (this one takes text)")
        plans = self.plan(prompts, answers, terminator, tokenization)
        jobs = []  # (plan index, row index, request body, tokens the server must echo)
        for i, (prompt, ans, pl) in enumerate(zip(prompts, answers, plans)):
            texts = {row: prompt + a + (terminator or "") for row, a in zip(pl.answer_rows, ans)}
            if pl.remainder_row is not None:
                texts[pl.remainder_row] = prompt
            for r, row in enumerate(pl.rows):
                seq = pl.prefix + row
                jobs.append((i, r, self._echo_body(seq if self.send_ids else texts[r]), len(seq) - self.echo_offset))
        responses = self.client.complete_many([j[2] for j in jobs], self.progress)
        row_lp = [np.zeros(len(pl.rows)) for pl in plans]
        for (i, r, body, expected), resp in zip(jobs, responses):
            _, values = echoed_prompt(resp)
            if len(values) != expected:
                raise TasksupError(f"the server tokenized {body['prompt'][-40:]!r} into {len(values) + self.echo_offset} "
                                   f"tokens, the local tokenizer into {expected + self.echo_offset}: not the server's "
                                   "tokenizer (drop the `tokenizer` setting to let the server tokenize)")
            row_lp[i][r] = _sum_tail(values, len(plans[i].rows[r]))
        out = []
        for pl, lp in zip(plans, row_lp):
            scores = lp[pl.answer_rows]
            out.append(scores - lp[pl.remainder_row] if pl.remainder_row is not None else scores)
        return Scores(np.stack(out), [p.boundary_merge for p in plans], [p.separate_differs for p in plans])

    def _score_server_tokens(self, prompts, answers, terminator, tokenization) -> Scores:
        if tokenization != "in_context":
            raise TasksupError("tokenization='separate' needs a local tokenizer (remote setting `tokenizer`)")
        suffix = terminator or ""
        for a in (a for ans in answers for a in ans):
            if not isinstance(a, str) or a == "":
                raise TasksupError(f"answers must be non-empty strings, got {a!r}")
        texts = [[p] + [p + a + suffix for a in ans] for p, ans in zip(prompts, answers)]
        flat = self.client.complete_many([self._echo_body(t) for row in texts for t in row], self.progress)
        logprobs, merges, j = [], [], 0
        for row in texts:
            echoes = [echoed_prompt(r) for r in flat[j:j + len(row)]]
            j += len(row)
            (p_tokens, p_values), rest = echoes[0], echoes[1:]
            shared = [common_prefix_len(p_tokens, t) for t, _ in rest]
            c = min(shared)
            logprobs.append([_sum_tail(v, len(v) - c) - _sum_tail(p_values, len(p_values) - c) for _, v in rest])
            merges.append([s < len(p_tokens) for s in shared])
        unknown = [[None] * len(a) for a in answers]  # needs the tokenizer: tok(answer) alone is not known
        return Scores(np.array(logprobs, dtype=np.float64), merges, unknown)

    def search(self, prompt: str, k: int = 6, stop: str | None = "\n", max_tokens: int = 8):
        """The k most probable complete outputs found over the server's top-N lists (see :mod:`.search`)."""
        from tasksup.models.remote.search import remote_best_first

        found = remote_best_first(self, prompt, k, stop, max_tokens)
        self.search_stats["searches"] += 1
        self.search_stats["certified"] += int(found.certified)
        return found

    # -- provenance ------------------------------------------------------------------------
    def identity(self) -> dict:
        if self.tokenizer is None:
            tokenized_by = "server (text prompts)"
        elif self.send_ids:
            tokenized_by = f"local tokenizer {self.tokenizer_name} (token-id prompts)"
        else:
            tokenized_by = f"server (text prompts; token counts checked against local tokenizer {self.tokenizer_name})"
        info = {
            "name": self.name, "class": type(self).__name__, "endpoint": self.client.base_url,
            "served_model": self.served_model, "server": self.server_info, "mode": self.mode,
            "probabilities": "exact" if self.mode == "exact" else "lower bounds (beam over top-N log-probs)",
            "tokenized_by": tokenized_by, "tokenizer": self.tokenizer_name, "top_logprobs": self.top_n,
        }
        if self.mode == "approximate":
            info.update(beam_width=self.beam_width, min_prob=self.min_prob)
        info["fingerprint"] = hashlib.sha256(json.dumps(info, sort_keys=True, default=str).encode()).hexdigest()[:16]
        return info

    def usage(self) -> dict:
        """Requests, cache hits, retries and tokens so far (this process); goes into run.json / summary.json."""
        return {**self.client.usage_dict(), "beam": dict(self.beam_stats), "search": dict(self.search_stats)}

    def __repr__(self) -> str:
        return f"RemoteLanguageModel({self.served_model!r} at {self.client.base_url}, mode={self.mode})"


@dataclass
class RemoteSettings:
    """Settings of ``openai:MODEL`` models (the ``remote:`` mapping of a config; docs/remote.md)."""

    mode: str = "exact"  # exact (echo + logprobs) | approximate (beam over top-N; lower bounds)
    tokenizer: str | None = None  # tokenizer dir / hub id / .gguf file: tokenize here (else the server does)
    prompt_ids: str = "auto"  # auto (token ids if a tokenizer is given and the server takes them) | always | never
    top_logprobs: int = 5  # N of the top-N lists (approximate mode, search); OpenAI allows at most 5
    beam_width: int = 16  # approximate mode: partial answers extended per prompt and depth
    min_prob: float = 1e-6  # approximate mode: partial answers less probable than this are dropped
    max_context: int | None = None  # the server's context in tokens (default: from /v1/models when it says)
    api_key_env: str = "OPENAI_API_KEY"  # the environment variable holding the API key (never stored)
    concurrency: int = 8  # requests in flight at once
    max_retries: int = 6  # on 429, 5xx, timeouts, refused connections; back-off 0.5 s, 1 s, 2 s, ... (30 s max)
    backoff: float = 0.5
    timeout: float = 120.0  # seconds per request
    cache: str | None = None  # response cache directory (default ~/.cache/tasksup/remote); "off": none
    progress: bool = False  # a progress bar over the requests of each batch


def load_remote_model(name: str, *, base_url: str | None = None, batch_size: int = 8,
                      **settings) -> RemoteLanguageModel:
    """``openai:MODEL`` served at ``base_url`` (default: OpenAI's API), with :class:`RemoteSettings`."""
    from tasksup.config import build_config
    from tasksup.models.loading import load_tokenizer
    from tasksup.testing import cache_dir

    s = build_config(RemoteSettings, settings, source="remote settings")
    model = name.removeprefix("openai:")
    if not model:
        raise TasksupError("remote models are named openai:MODEL, e.g. openai:meta-llama/Llama-3.1-70B")
    cache_path = None if s.cache == "off" else Path(s.cache) if s.cache else cache_dir() / "remote"
    base_url = base_url or OPENAI_API
    if urlparse(base_url).hostname == urlparse(OPENAI_API).hostname and not os.environ.get(s.api_key_env):
        raise TasksupError(f"{name}: OpenAI's API needs a key, and ${s.api_key_env} is not set")
    client = CompletionsClient(base_url, api_key_env=s.api_key_env,
                               concurrency=s.concurrency, max_retries=s.max_retries, backoff=s.backoff,
                               timeout=s.timeout, cache_dir=cache_path)
    tok = None
    if s.tokenizer:
        path = Path(s.tokenizer).expanduser()
        try:
            tok = (load_tokenizer(str(path.parent), gguf_file=path.name) if path.suffix == ".gguf"
                   else load_tokenizer(str(path) if path.exists() else s.tokenizer))
        except Exception as e:  # missing folder, offline hub id, corrupt file
            raise TasksupError(f"could not load tokenizer {s.tokenizer!r}: {type(e).__name__}: "
                               f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}") from None
    return RemoteLanguageModel(client, model, tokenizer=tok, tokenizer_name=s.tokenizer, mode=s.mode,
                               prompt_ids=s.prompt_ids, top_logprobs=s.top_logprobs, beam_width=s.beam_width,
                               min_prob=s.min_prob, max_context=s.max_context, batch_size=batch_size,
                               progress=s.progress)
