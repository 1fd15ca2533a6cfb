"""The HTTP client's retry, error and cache policy, against a scripted local HTTP server.

(The model-level behaviour is tested against a real llama.cpp server in test_remote.py; this file
needs no server package and pins what must happen on 429/5xx/4xx, which a healthy engine never says.)
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tasksup import TasksupError
from tasksup.models.remote.client import CompletionsClient, ResponseCache, normalize_base_url


class Scripted(BaseHTTPRequestHandler):
    script: list = []  # (status, body dict, headers) answered in order; the last one repeats
    seen: list = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        length = int(self.headers.get("content-length", 0))
        request = json.loads(self.rfile.read(length))
        type(self).seen.append((request, self.headers.get("authorization")))
        status, body, headers = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if body == "ECHO":  # answer with the request's prompt, to check that answers keep their order
            body = {"choices": [{"text": request["prompt"]}]}
        data = json.dumps(body).encode()
        self.send_response(status)
        for k, v in {"content-type": "application/json", **headers}.items():
            self.send_header(k, v)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def scripted():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Scripted.seen = []

    def run(script):
        Scripted.script = list(script)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield run
    server.shutdown()


OK = (200, {"choices": [{"text": "x"}], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}, {})


def test_retries_429_and_5xx_then_succeeds_and_counts(scripted, tmp_path, monkeypatch):
    monkeypatch.setenv("MY_KEY", "secret-value-123")
    url = scripted([(429, {}, {"retry-after": "0"}), (503, {}, {}), OK])
    client = CompletionsClient(url, api_key_env="MY_KEY", backoff=0.01, cache_dir=tmp_path)
    assert client.complete({"model": "m", "prompt": "p"})["choices"][0]["text"] == "x"
    assert client.usage_dict() | {"seconds": 0} == {"requests": 1, "cache_hits": 0, "retries": 2, "errors": 0,
                                                   "prompt_tokens": 3, "completion_tokens": 1, "seconds": 0}
    assert Scripted.seen[-1][1] == "Bearer secret-value-123"
    client.complete({"model": "m", "prompt": "p"})  # the cache answers; the server is not asked again
    assert len(Scripted.seen) == 3 and client.usage.cache_hits == 1
    files = list(tmp_path.rglob("*.json"))
    assert len(files) == 1 and "secret-value-123" not in files[0].read_text()
    assert files[0].stem == ResponseCache.key(f"{url}/v1/completions", {"model": "m", "prompt": "p"})


def test_client_errors_are_one_line_and_not_retried(scripted):
    url = scripted([(400, {"error": {"message": "prompt is too long:\n 4097 > 4096"}}, {})])
    client = CompletionsClient(url, backoff=0.01, cache_dir=None)
    with pytest.raises(TasksupError) as e:
        client.complete({"model": "m", "prompt": "p"})
    assert str(e.value).endswith("HTTP 400: prompt is too long: 4097 > 4096") and "\n" not in str(e.value)
    assert len(Scripted.seen) == 1


def test_gives_up_after_max_retries(scripted):
    url = scripted([(500, {"error": "boom"}, {})])
    client = CompletionsClient(url, max_retries=2, backoff=0.01, cache_dir=None)
    with pytest.raises(TasksupError, match="HTTP 500 after 3 attempts .*re-run the same command"):
        client.complete({"model": "m", "prompt": "p"})
    assert len(Scripted.seen) == 3 and client.usage.retries == 2 and client.usage.errors == 1


def test_concurrent_requests_keep_order(scripted):
    url = scripted([(200, "ECHO", {})])
    client = CompletionsClient(url, concurrency=4, cache_dir=None)
    bodies = [{"model": "m", "prompt": str(i)} for i in range(10)] + [{"model": "m", "prompt": "0"}]
    answers = client.complete_many(bodies)
    assert [a["choices"][0]["text"] for a in answers] == [b["prompt"] for b in bodies]
    assert sorted(b["prompt"] for b, _ in Scripted.seen) == sorted(str(i) for i in range(10))  # duplicate sent once


def test_base_url_forms():
    assert normalize_base_url("http://h:8000") == "http://h:8000/v1"
    assert normalize_base_url("https://api.x.com/v1/") == "https://api.x.com/v1"
    with pytest.raises(TasksupError):
        normalize_base_url("h:8000")
