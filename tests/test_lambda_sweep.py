"""Fig. 3's lambda sweep on a tiny random model: prompts, exact probabilities, summary, resume, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from reference import in_context_logprob

from tasksup import TasksupError, load_model
from tasksup.runner import run_config

LAMBDAS = [0.0, 0.25, 0.5, 1.0]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, tiny_model_dirs):
    root = tmp_path_factory.mktemp("sweep")
    cfg = root / "fig3.yaml"
    cfg.write_text(f"experiment: lambda_sweep\ntasks: [plus2, plus6]\nlambdas: {LAMBDAS}\nn_examples: 4\n"
                   "n_prompts: 3\nbatch_size: 5\n")
    run_dir = run_config(cfg, model=str(tiny_model_dirs["gpt2"]), out=root / "out", progress=False)
    return cfg, run_dir


def test_records_follow_lambda_and_match_the_reference(sweep, tiny_model_dirs):
    _, run_dir = sweep
    records = sorted(run_dir.records(), key=lambda r: r["index"])
    assert [r["index"] for r in records] == list(range(12))
    lm = load_model(str(tiny_model_dirs["gpt2"]), device="cpu")
    for r in records:
        lam = LAMBDAS[r["index"] // 3]
        assert r["lambda"] == lam and r["mixture"] == [lam, 1 - lam]
        assert r["counts"] == [round(4 * lam), 4 - round(4 * lam)]
        lines = r["prompt"].split("\n")
        num = int(lines[-1].removesuffix("->"))
        assert r["answers"] == [str(num + 2), str(num + 6)]
        shown = sum(int(b) - int(a) == 2 for a, b in (line.split("->") for line in lines[:-1]))
        assert shown == r["counts"][0]
        slow = [np.exp(in_context_logprob(lm, r["prompt"], a)) for a in r["answers"]]
        assert np.allclose(r["probs"], slow, rtol=1e-4)


def test_summary_and_figure(sweep):
    _, run_dir = sweep
    summary = json.loads((run_dir.path / "summary.json").read_text())
    records = run_dir.records()
    assert [e["lambda"] for e in summary["per_lambda"]] == LAMBDAS
    for e in summary["per_lambda"]:
        p = np.array([r["probs"] for r in records if r["lambda"] == e["lambda"]])
        assert e["plus2"]["mean"] == pytest.approx(p[:, 0].mean())
        assert e["other"]["median"] == pytest.approx(np.median(1 - p.sum(1)))
    means = [e["plus2"]["mean"] for e in summary["per_lambda"]]
    assert summary["pearson_mean_a_vs_lambda"] == pytest.approx(np.corrcoef(LAMBDAS, means)[0, 1])
    assert (run_dir.path / "fig3.png").is_file() and (run_dir.path / "summary.csv").is_file()
    mixed = [r for r in records if min(r["counts"]) > 0]
    first = [r["tasks"][int(np.argmax(r["probs"][:2]))] == r["example_tasks"][0] for r in mixed]
    assert summary["per_prompt"]["n_prompts"] == len(mixed)
    assert summary["per_prompt"]["follows_example"][0] == pytest.approx(np.mean(first))


def test_resume_recomputes_only_what_is_missing(sweep, tiny_model_dirs):
    cfg, run_dir = sweep
    lines = run_dir.jsonl.read_text().splitlines()
    run_dir.jsonl.write_text("\n".join(lines[:7]) + "\n" + lines[7][:20])  # a cut-off line, as after a kill
    again = run_config(cfg, model=str(tiny_model_dirs["gpt2"]), out=run_dir.path, progress=False)
    redo = {r["index"]: r for r in again.records()}
    assert len(again.records()) == 12
    for line in lines:
        r = json.loads(line)
        assert np.allclose(redo[r["index"]]["probs"], r["probs"], rtol=1e-6) and redo[r["index"]]["prompt"] == r["prompt"]


@pytest.mark.parametrize("body, message", [
    ("tasks: [ret1, ret2, ret3]\n", "exactly two tasks"),
    ("lambdas: [0.5, 1.5]\n", "numbers in [0, 1]"),
    ("lambdas: [0.5, 0.5]\n", "repeat"),
])
def test_bad_sweeps_fail_before_loading_a_model(tmp_path, body, message):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("experiment: lambda_sweep\nmodel: /nonexistent/model\n" + body)
    with pytest.raises(TasksupError, match=message.replace("[", r"\[").replace("]", r"\]")):
        run_config(cfg, out=tmp_path / "out", progress=False)
