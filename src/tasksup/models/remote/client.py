"""HTTP client for OpenAI-compatible ``/v1/completions`` servers (vLLM, llama.cpp, OpenAI).

What it adds to a bare POST: a concurrency limit, retries with exponential back-off on 429, 5xx,
timeouts and refused connections, a one-line :class:`TasksupError` on any other 4xx, an on-disk JSON
response cache (so that re-running a finished experiment sends no request), and request/token
counters for the run summary. The API key is read from an environment variable at request time
and is never part of a cache key, a cache file, a log line or a result.

httpx (not the ``openai`` package): we need the raw ``echo``/``logprobs`` fields of the legacy
completions endpoint, token-id prompts, server-specific extras and our own retry policy, and
``openai`` would add a second retry layer and typed objects we would only convert back to JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from tqdm import tqdm

from tasksup.errors import TasksupError

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


def normalize_base_url(url: str) -> str:
    """``http://host:8000`` -> ``http://host:8000/v1``; a URL with a path is kept as given (minus a final /)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise TasksupError(f"base_url must be an http(s) URL like http://127.0.0.1:8000/v1, got {url!r}")
    url = url.rstrip("/")
    return url + "/v1" if parts.path in ("", "/") else url


@dataclass
class Usage:
    """What talking to the server cost (this process; written to run.json and summary.json)."""

    requests: int = 0  # answered requests sent over the network
    cache_hits: int = 0  # requests answered from the on-disk cache
    retries: int = 0  # attempts repeated after a 429/5xx/timeout/refused connection
    errors: int = 0  # requests given up on (4xx, or still failing after the retries)
    prompt_tokens: int = 0  # as reported by the server's `usage` field
    completion_tokens: int = 0
    seconds: float = 0.0  # wall time spent waiting for the server


class ResponseCache:
    """One JSON file per response under ``root/ab/abcdef....json``, keyed by (endpoint, model, request)."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()

    @staticmethod
    def key(endpoint: str, body: dict) -> str:
        blob = json.dumps({"endpoint": endpoint, "model": body.get("model"), "request": body}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())["response"]
        except (ValueError, KeyError):  # a file cut short by a crash: ask the server again
            return None

    def put(self, key: str, endpoint: str, body: dict, response: dict) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps({"endpoint": endpoint, "request": body, "response": response}))
        tmp.replace(path)  # atomic: a reader never sees half a file


class CompletionsClient:
    """Thread-safe client; :meth:`complete_many` runs up to ``concurrency`` requests at once."""

    def __init__(self, base_url: str, *, api_key_env: str = "OPENAI_API_KEY", concurrency: int = 8,
                 max_retries: int = 6, backoff: float = 0.5, max_backoff: float = 30.0, timeout: float = 120.0,
                 cache_dir: str | Path | None = None):
        if concurrency < 1 or max_retries < 0 or backoff < 0 or timeout <= 0:
            raise TasksupError("remote settings need concurrency >= 1, max_retries >= 0, backoff >= 0, timeout > 0")
        self.base_url = normalize_base_url(base_url)
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.cache = ResponseCache(cache_dir) if cache_dir is not None else None
        self.usage = Usage()
        self._lock = threading.Lock()
        self._http = httpx.Client(timeout=timeout, limits=httpx.Limits(max_connections=concurrency))
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="tasksup-remote")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()

    def _headers(self) -> dict:
        key = os.environ.get(self.api_key_env)
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _count(self, **delta) -> None:
        with self._lock:
            for name, value in delta.items():
                setattr(self.usage, name, getattr(self.usage, name) + value)

    def request(self, method: str, path: str, body: dict | None = None, retry: bool = True) -> dict:
        """One JSON request (cached when a cache is set), retried on transient failures unless ``retry=False``."""
        endpoint = f"{self.base_url}/{path.lstrip('/')}"
        key = ResponseCache.key(endpoint, body or {}) if self.cache else None
        if key and (hit := self.cache.get(key)) is not None:
            self._count(cache_hits=1)
            return hit
        attempts = self.max_retries + 1 if retry else 1
        for attempt in range(attempts):
            start = time.perf_counter()
            try:
                response = self._http.request(method, endpoint, json=body, headers=self._headers())
                problem = None if response.status_code not in RETRY_STATUS else f"HTTP {response.status_code}"
            except httpx.TimeoutException:
                response, problem = None, "timed out"
            except httpx.TransportError as e:  # refused, reset, DNS: the server is down or restarting
                response, problem = None, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no answer'}"
            self._count(seconds=time.perf_counter() - start)
            if problem is None:
                break
            if attempt == attempts - 1:
                self._count(errors=1)
                raise TasksupError(f"remote server {self.base_url}: {problem} after {attempt + 1} attempts "
                                   "(is it running?); finished work is saved, re-run the same command to resume")
            self._count(retries=1)
            time.sleep(self._delay(attempt, response))
        if response.status_code >= 400:
            self._count(errors=1)
            raise TasksupError(self._client_error(response))
        try:
            data = response.json()
        except ValueError:
            raise TasksupError(f"remote server {self.base_url} answered {path} with something that is not JSON") from None
        usage = data.get("usage") or {}
        self._count(requests=1, prompt_tokens=int(usage.get("prompt_tokens") or 0),
                    completion_tokens=int(usage.get("completion_tokens") or 0))
        if key:
            self.cache.put(key, endpoint, body or {}, data)
        return data

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        retry_after = response.headers.get("retry-after") if response is not None else None
        if retry_after and retry_after.replace(".", "", 1).isdigit():
            return min(float(retry_after), self.max_backoff)
        return min(self.max_backoff, self.backoff * 2 ** attempt) * random.uniform(0.5, 1.0)  # jitter

    def _client_error(self, response: httpx.Response) -> str:
        try:
            detail = response.json()
            detail = detail.get("error", detail) if isinstance(detail, dict) else detail
            detail = detail.get("message", detail) if isinstance(detail, dict) else detail
        except ValueError:
            detail = response.text
        detail = " ".join(str(detail).split())[:300]
        hint = f" (check ${self.api_key_env})" if response.status_code in (401, 403) else ""
        return f"remote server {self.base_url} rejected the request: HTTP {response.status_code}{hint}: {detail}"

    def complete(self, body: dict) -> dict:
        return self.request("POST", "completions", body)

    def complete_many(self, bodies: list[dict], progress: bool = False, desc: str = "requests") -> list[dict]:
        """Responses in order; identical bodies are sent once. Up to ``concurrency`` in flight."""
        unique = {json.dumps(b, sort_keys=True): b for b in bodies}
        bar = tqdm(total=len(unique), desc=desc, leave=False, disable=not progress or len(unique) < 2)
        futures = {k: self._pool.submit(self.complete, b) for k, b in unique.items()}
        answers = {}
        try:
            for k, f in futures.items():
                answers[k] = f.result()
                bar.update()
        finally:
            for f in futures.values():
                f.cancel()
            bar.close()
        return [answers[json.dumps(b, sort_keys=True)] for b in bodies]

    def usage_dict(self) -> dict:
        with self._lock:
            out = asdict(self.usage)
        out["seconds"] = round(out["seconds"], 3)
        return out
