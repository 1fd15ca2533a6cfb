"""Remote models against a REAL llama.cpp server (llama-cpp-python[server]) serving a tiny GGUF.

The GGUF holds the real Llama-2 (SentencePiece) vocabulary and random float32 llama weights; the
local twin is the same file as transformers loads it. One server per module; each test keeps its
own response cache (tmp_path), so that every request it counts really reaches the server.
Measured numbers are printed (run with -s to see them).
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading
import time
from collections import Counter

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from tasksup import TasksupError, load_model
from tasksup.tasks import PromptBuilder, resolve_tasks

SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "pydantic_settings", "sse_starlette", "starlette_context")
MISSING = [m for m in SERVER_MODULES if importlib.util.find_spec(m) is None]
pytestmark = [pytest.mark.llamacpp,
              pytest.mark.skipif(bool(MISSING), reason=f"llama-cpp-python[server] not installed (missing {MISSING})")]

KEY_ENV = "TASKSUP_TEST_REMOTE_KEY"
KEY = "sk-tasksup-test-9f3b2c71"
MERGE_CASE = ("Hello wor", ["ld", "k", "ry"])  # "wor" + "ld" -> "▁world": a merge across the boundary


def mixture_prompts(family: str, n: int, m: int = 3, seed: int = 0):
    builder = PromptBuilder(resolve_tasks(family))
    out = [builder.build("uniform", m, np.random.default_rng([seed, i])) for i in range(n)]
    return [p.text for p in out], [p.answers for p in out]


def rel_err(a, b) -> float:
    return float(np.max(np.abs(np.expm1(np.asarray(a) - np.asarray(b)))))


@pytest.fixture(scope="module")
def gguf():
    from tasksup.models.remote.llamacpp import tiny_llama_gguf

    return tiny_llama_gguf("llama2")


@pytest.fixture(scope="module")
def twin_dir(gguf):
    from tasksup.models.remote.llamacpp import hf_twin

    return hf_twin(gguf)


@pytest.fixture(scope="module")
def twin(twin_dir):
    return load_model(str(twin_dir), device="cpu")


@pytest.fixture(scope="module")
def server(gguf, tmp_path_factory):
    from tasksup.models.remote.llamacpp import LlamaCppServer

    old = os.environ.get(KEY_ENV)
    os.environ[KEY_ENV] = KEY
    srv = LlamaCppServer(gguf, api_key=KEY, n_ctx=256, log=tmp_path_factory.mktemp("server") / "server.log").start()
    yield srv
    srv.stop()
    if old is None:
        os.environ.pop(KEY_ENV, None)
    else:
        os.environ[KEY_ENV] = old


@pytest.fixture
def remote(server, tmp_path):
    def make(**settings):
        settings.setdefault("cache", str(tmp_path / "cache"))
        settings.setdefault("api_key_env", KEY_ENV)
        return load_model("openai:tiny", base_url=server.url, **settings)

    return make


def test_exact_mode_matches_local_scorer_and_caches(remote, twin, twin_dir, tmp_path):
    prompts, answers = mixture_prompts("country", 2)
    p2, a2 = mixture_prompts("copy_add", 1)
    prompts, answers = prompts + p2 + [MERGE_CASE[0]], answers + a2 + [MERGE_CASE[1]]
    lm = remote(tokenizer=str(twin_dir))
    assert not lm.send_ids  # llama-cpp-python's server takes text prompts only: counts are checked instead
    got, want = lm.score(prompts, answers), twin.score(prompts, answers)
    err = rel_err(got.logprobs, want.logprobs)
    print(f"\nexact mode, local tokenizer: max relative error in probability {err:.2e}")
    assert err < 1e-3
    assert got.boundary_merge == want.boundary_merge and any(got.boundary_merge[-1])
    assert got.separate_differs == want.separate_differs
    sent = lm.usage()["requests"]
    assert sent == 3 * 3 + 4 + 2  # K requests per prompt, +1 (the prompt alone) for the merge; + probe, /models
    again = lm.answer_probs(prompts, answers)
    assert np.array_equal(again, np.exp(got.logprobs))
    assert lm.usage()["requests"] == sent and lm.usage()["cache_hits"] >= sent - 2
    files = list((tmp_path / "cache").rglob("*.json"))
    assert len(files) == sent and not any(KEY in f.read_text() for f in files)
    assert KEY not in json.dumps(lm.identity())


def test_exact_mode_server_tokenizes(remote, twin):
    prompts, answers = mixture_prompts("country", 1, seed=1)
    prompts, answers = prompts + [MERGE_CASE[0]], answers + [MERGE_CASE[1]]
    lm = remote()
    got, want = lm.score(prompts, answers), twin.score(prompts, answers)
    err = rel_err(got.logprobs, want.logprobs)
    print(f"\nexact mode, server tokenizes: max relative error in probability {err:.2e}")
    assert err < 1e-3
    assert got.boundary_merge == want.boundary_merge
    assert lm.identity()["tokenized_by"].startswith("server")


def test_user_errors_are_one_line(remote, server, twin_dir, monkeypatch):
    monkeypatch.setenv("TASKSUP_WRONG_KEY", "not-the-key")
    with pytest.raises(TasksupError, match=r"HTTP 401 \(check \$TASKSUP_WRONG_KEY\)"):
        remote(api_key_env="TASKSUP_WRONG_KEY", cache="off")
    with pytest.raises(TasksupError, match="does not serve 'nope'"):
        load_model("openai:nope", base_url=server.url, api_key_env=KEY_ENV, cache="off")
    with pytest.raises(TasksupError, match="unknown config key 'beam'"):
        remote(beam=3)
    lm = remote(tokenizer=str(twin_dir))
    with pytest.raises(TasksupError, match="separate.*token-id prompts"):
        lm.score("a->", ["b"], tokenization="separate")
    from tasksup.decoding import greedy_output

    with pytest.raises(TasksupError, match="served remotely"):  # sampling needs the weights in this process
        greedy_output(lm, "a->", "\n", 4)
    with pytest.raises(TasksupError, match="base_url must be an http"):
        load_model("openai:tiny", base_url="127.0.0.1:1")


def test_approximate_mode_is_a_lower_bound(remote, twin, twin_dir):
    from tasksup.models.remote.approx import ambiguous_texts

    prompts, answers = mixture_prompts("country", 3, seed=2)
    exact = twin.answer_logprobs(prompts, answers)
    api_like = remote(tokenizer=str(twin_dir), mode="approximate", top_logprobs=5)
    low = api_like.answer_logprobs(prompts, answers)
    assert np.all(low <= exact + 1e-3)
    found = np.isfinite(low)
    print(f"\napproximate mode (top-5, width 16): {found.sum()}/{found.size} answers found; "
          f"mean probability {np.exp(low).mean():.3e} vs exact {np.exp(exact).mean():.3e}")

    full = remote(tokenizer=str(twin_dir), mode="approximate", top_logprobs=32000, beam_width=64, min_prob=0.0)
    lp = full.answer_logprobs(prompts, answers)
    ambiguous = ambiguous_texts(full)
    for i, (p, ans) in enumerate(zip(prompts, answers)):
        ids = twin.encode(p)
        for k, a in enumerate(ans):
            joint = twin.encode(p + a)
            pieces = [twin.tokenizer.decode(joint[:j + 1])[len(twin.tokenizer.decode(joint[:j])):]
                      for j in range(len(ids), len(joint))]
            if any(x in ambiguous for x in pieces):
                assert lp[i, k] == -np.inf  # the server's text-keyed list cannot say which token it means
            else:
                assert abs(np.expm1(lp[i, k] - exact[i, k])) < 1e-3  # nothing cut: the beam is exact
    print(f"approximate mode (full vocabulary): {np.isfinite(lp).sum()}/{lp.size} equal the exact value, "
          f"the rest contain a byte-fallback twin; beam stats {full.usage()['beam']}")


def test_approximate_text_mode_bounds_the_text_probability(remote, twin):
    prompts, answers = mixture_prompts("letters", 2, m=4, seed=3)  # one-character answers
    lm = remote(mode="approximate", top_logprobs=32000, min_prob=0.0)
    low = np.exp(lm.answer_logprobs(prompts, answers))
    import torch

    for i, (p, ans) in enumerate(zip(prompts, answers)):  # P(the continuation starts with a), all tokenizations
        ids = twin.encode(p)
        with torch.no_grad():
            probs = torch.softmax(twin.model(torch.tensor([ids])).logits[0, -1].double(), -1).numpy()
        base = twin.tokenizer.decode(ids)
        pieces = [twin.tokenizer.decode(ids + [t])[len(base):] for t in range(len(probs))]
        ref = np.array([sum(pr for pr, s in zip(probs, pieces) if s.startswith(a)) for a in ans])
        # the server keys its list by text: of tokens with the same text (a character and its
        # byte-fallback twin) one is listed, so at most their mass is missed
        shared = Counter(pieces)
        twins = np.array([sum(pr for pr, s in zip(probs, pieces) if s.startswith(a) and shared[s] > 1) for a in ans])
        assert np.all(low[i] <= ref * (1 + 1e-3)) and np.all(low[i] >= (ref - twins) * (1 - 1e-3))
        print(f"\ntext mode: approximate / exact string probability = {np.round(low[i] / ref, 4)}")


def test_search_through_top_n_lists(remote, twin):
    prompt = mixture_prompts("country", 1, seed=4)[0][0]
    want = twin.search(prompt, k=4, stop="e", max_tokens=1).outputs
    lm = remote(top_logprobs=32000)
    full = lm.search(prompt, k=4, stop="e", max_tokens=1)
    assert full.certified and [o for o, _ in full.outputs] == [o for o, _ in want]
    decoded = lm.decode_superposed(prompt, k=4, stop="e", max_tokens=1)  # LanguageModel's, on our search
    assert [(d.output, d.probability) for d in decoded] == full.outputs
    assert rel_err(np.log([p for _, p in full.outputs]), np.log([p for _, p in want])) < 1e-3
    short = remote(top_logprobs=5).search(prompt, k=4, stop="e", max_tokens=1)
    kth = min(p for _, p in short.outputs) if len(short.outputs) == 4 else 0.0
    assert short.certified == (short.unseen_bound <= kth)
    truth = dict(twin.search(prompt, k=50, stop="e", max_tokens=1).outputs)
    assert all(p <= truth[o] * (1 + 1e-3) for o, p in short.outputs)
    print(f"\nsearch with top-5 lists: certified={short.certified}, unseen bound {short.unseen_bound:.3g}")


def test_kill_server_mid_run_then_resume(server, twin, twin_dir, tmp_path):
    from tasksup.cli import app

    out = tmp_path / "run"
    cfg = tmp_path / "remote.yaml"
    cfg.write_text(yaml.safe_dump({
        "experiment": "mixture", "tasks": "country", "n_examples": 3, "n_prompts": 2, "batch_size": 1,
        "remote": {"tokenizer": str(twin_dir), "api_key_env": KEY_ENV, "cache": str(tmp_path / "cache"),
                   "max_retries": 2, "backoff": 0.05}}))
    args = ["run", str(cfg), "--model", "openai:tiny", "--base-url", server.url, "--out", str(out), "--no-progress"]

    def kill_after_first_record():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            jsonl = out / "results.jsonl"
            if jsonl.is_file() and jsonl.read_text().count("\n") >= 1:
                server.stop(kill=True)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_after_first_record)
    killer.start()
    first = CliRunner().invoke(app, args)
    killer.join()
    try:
        assert first.exit_code == 2
        assert "tasksup: error: remote server" in first.output and "re-run the same command" in first.output
        assert len(first.output.strip().splitlines()) == 1
        done = (out / "results.jsonl").read_text().count("\n")
        assert done == 1
    finally:
        server.start()
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0, second.output
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["index"] for r in records) == [0, 1]
    want = twin.answer_logprobs([r["prompt"] for r in records], [r["answers"] for r in records])
    assert rel_err([r["logprobs"] for r in records], want) < 1e-3
    before = {f.name: f.read_bytes() for f in out.iterdir() if f.is_file()}
    third = CliRunner().invoke(app, args)  # a finished run: the re-run sends no request and changes no file
    assert third.exit_code == 0
    assert {f.name: f.read_bytes() for f in out.iterdir() if f.is_file() and f.name != "warnings.log"} == \
        {k: v for k, v in before.items() if k != "warnings.log"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["remote_usage"]["requests"] > 0  # the second invocation's, which finished the run
    meta = json.loads((out / "run.json").read_text())
    assert len(meta["remote_usage"]) == 2 and meta["model"]["served_model"] == "tiny"
    assert not any(KEY in f.read_text() for f in out.iterdir() if f.suffix in (".json", ".jsonl", ".csv"))
    print(f"\nkill/resume: {done} of 2 prompts saved before the kill; usage per invocation "
          f"{[u['requests'] for u in meta['remote_usage']]} requests")
