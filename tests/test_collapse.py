"""The collapse experiment end to end on a tiny model: every part, checked against slow recomputation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from reference import in_context_logprob, next_token_logprobs

from tasksup import TasksupError, load_model
from tasksup.runner import prepare, run_config
from tasksup.tasks import example_inputs

SETTINGS = {"experiment": "collapse", "tasks": "translate", "n_examples": 3, "n_prompts": 2, "n_samples": 16,
            "max_tokens": 24, "n_turns": 5, "seed": 3}


@pytest.fixture(scope="module")
def collapse_run(tiny_model_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("collapse")
    config = root / "collapse_tiny.yaml"
    config.write_text(yaml.safe_dump(SETTINGS))
    model = str(tiny_model_dirs["gpt2"])
    run_dir = run_config(config, model=model, out=root / "out", progress=False)
    return config, model, run_dir, load_model(model, device="cpu")


@torch.inference_mode()
def slow_greedy_text(lm, prompt: str, max_tokens: int) -> tuple[str, bool]:
    """Greedy by full recomputation: (output text, complete?); incomplete gives all generated text."""
    ids, path = lm.encode(prompt), []
    for _ in range(max_tokens):
        path.append(int(next_token_logprobs(lm.model, ids + path).argmax()))
        text = lm.tokenizer.decode(path, skip_special_tokens=True)
        if path[-1] in lm.eos_ids:
            return lm.tokenizer.decode(path[:-1], skip_special_tokens=True), True
        if "\n" in text:
            return text.split("\n", 1)[0], True
    return text, False


def test_drift_turns_replay_exactly(collapse_run):
    _, _, run_dir, lm = collapse_run
    records = run_dir.records()
    assert [r["index"] for r in records] == [0, 1]
    for rec in records:
        turns = rec["drift"]["turns"]
        assert len(turns) == SETTINGS["n_turns"] + 1 and turns[0]["answers"] == rec["answers"]
        text = rec["prompt"]
        for j, turn in enumerate(turns):
            if j > 0:
                prev = turns[j - 1]
                assert turn["query"] not in example_inputs(text, "\n", "->")  # a fresh query
                text = text + prev["output"] + "\n" + turn["query"]
            expected = np.array([in_context_logprob(lm, text, a, "\n") for a in turn["answers"]])
            np.testing.assert_allclose(turn["logprobs"], expected, rtol=1e-4)
            assert turn["other"] == pytest.approx(1 - np.exp(expected).sum(), abs=1e-6)
            np.testing.assert_allclose(turn["shares"], np.exp(expected - expected.max()) /
                                       np.exp(expected - expected.max()).sum(), rtol=1e-4, atol=1e-12)
            if j < SETTINGS["n_turns"]:
                assert (turn["output"], turn["complete"]) == slow_greedy_text(lm, text, SETTINGS["max_tokens"])
                assert turn["task"] == (turn["answers"].index(turn["output"]) if turn["output"] in turn["answers"]
                                        else None)
        committed = [t["task"] for t in turns[:-1]]
        counts = np.array(rec["counts"], dtype=float)
        for j, turn in enumerate(turns):
            for c in committed[:j]:
                if c is not None:
                    counts[c] += 1
            np.testing.assert_allclose(turn["in_context"], counts / counts.sum())


def test_commitment_is_conditioning_on_the_first_token(collapse_run):
    _, _, run_dir, lm = collapse_run
    for rec in run_dir.records():
        c = rec["commitment"]
        before = np.array(rec["shares"])
        assert c["entropy_before"] == pytest.approx(-(before * np.log2(before)).sum(), rel=1e-6)
        assert c["conditioning_error"] < 1e-6
        root = next_token_logprobs(lm.model, lm.encode(rec["prompt"])).exp()
        for b in c["branches"]:
            assert sum(b["after"]) == pytest.approx(1.0)
            assert b["p"] == pytest.approx(float(root[b["token_id"]]), rel=1e-4)
            assert all(rec["answers"][t].startswith(b["token"]) for t in b["tasks"])
        assert c["greedy_token"] == lm.tokenizer.decode([int(root.argmax())])
        # char-level tokens: the depth is the first prefix of greedy's text that at most one answer extends
        text, _ = slow_greedy_text(lm, rec["prompt"], SETTINGS["max_tokens"])
        alive = lambda n: [k for k, a in enumerate(rec["answers"]) if (a + "\n").startswith(text[:n])]  # noqa: E731
        depth = next(n for n in range(1, len(text) + 1) if len(alive(n)) <= 1)
        assert (c["greedy_commit_depth"], c["greedy_commit_task"]) == (depth, (alive(depth) or [None])[0])


def test_sampling_counts_and_summary(collapse_run):
    _, _, run_dir, _ = collapse_run
    for rec in run_dir.records():
        s = rec["sampling"]
        assert sum(s["counts"]) == SETTINGS["n_samples"] and len(s["counts"]) == len(rec["answers"]) + 1
        assert s["model"][:-1] == pytest.approx(rec["probs"])
    summary = json.loads((run_dir.path / "summary.json").read_text())
    assert len(summary["drift"]["entropy"]) == SETTINGS["n_turns"] + 1
    assert {"commitment", "sampling", "drift"} <= set(summary)
    for stem in ("collapse_commitment", "collapse_sampling", "collapse_drift"):
        assert (run_dir.path / f"{stem}.png").is_file()


def test_rerun_resumes_without_recomputing(collapse_run):
    config, model, run_dir, _ = collapse_run
    before = (run_dir.path / "results.jsonl").read_text()
    run_config(config, model=model, out=run_dir.path, progress=False)
    assert (run_dir.path / "results.jsonl").read_text() == before


@pytest.mark.parametrize("override, message", [
    ({"parts": ["nope"]}, "parts must be"),
    ({"drift_decoder": "beam"}, "drift_decoder"),
    ({"n_samples": 0}, ">= 1"),
])
def test_bad_config_is_a_one_line_error(tmp_path, override, message):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({**SETTINGS, **override}))
    with pytest.raises(TasksupError, match=message):
        prepare(config)
