"""`tasksup bench scoring` code paths on a tiny model: correctness only, no timing asserts."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from tasksup import bench
from tasksup.cli import app


@pytest.fixture(scope="module")
def bench_lm(tmp_path_factory):
    setup = bench.BenchSetup(layers=1, width=32, heads=4, vocab="char", prompt_tokens=120, n_prompts=2)
    lm = bench.load_bench_model(str(bench.build_model(setup, tmp_path_factory.mktemp("bench") / "m")), setup)
    return setup, lm


def test_reference_scorer_agrees_with_ours(bench_lm):
    setup, lm = bench_lm
    for k in (4, 6):
        prompts = bench.bench_prompts(lm, k, setup)
        assert len(prompts) == 2 and all(len(p.answers) == k for p in prompts)
        assert all(0.7 * 120 < len(lm.encode(p.text)) < 1.3 * 120 for p in prompts)
        for p in prompts:
            ours = lm.answer_logprobs(p.text, p.answers)[0]
            assert np.abs(np.expm1(ours - bench.reference_logprobs(lm, p.text, p.answers))).max() < 1e-4


def test_answer_bias_and_beam(bench_lm):
    setup, lm = bench_lm
    p = bench.bench_prompts(lm, 4, setup)[0]
    before = lm.answer_probs(p.text, p.answers)[0]
    bench.bias_towards(lm, p.answers + ["\n"])
    try:
        assert (lm.answer_probs(p.text, p.answers)[0] > before).all()
        exact = dict(lm.top_outputs(p.text, k=4, stop="\n", max_tokens=3))
        beam = bench.reference_beam(lm, p.text, 4, "\n", 3)
        probs = [q for _, q in beam]
        assert probs == sorted(probs, reverse=True) and len(beam) <= 4
        # a beam's output outside the exact top-k is no better than the exact k-th (nothing was missed)
        assert len(exact) == 4
        for text, q in beam:
            assert q <= exact.get(text, min(exact.values())) * (1 + 1e-6)
    finally:
        lm.model.get_output_embeddings().bias = None


def test_bench_command_prints_json_last():
    res = CliRunner().invoke(app, ["bench", "scoring", "--json", "--layers", "1", "--width", "32", "--vocab", "char",
                                   "--prompt-tokens", "60", "--prompts", "1", "--repeats", "1"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout.strip().splitlines()[-1])
    import torch

    assert [r["threads"] for r in result["rows"]] == sorted({1, torch.get_num_threads()})  # 1 and the default
    for row in result["rows"]:
        for key in ("speedup_k4", "speedup_k6", "topk_speedup", "peak_mb_ours", "peak_mb_reference", "bare_ms_k4",
                    "ours_over_bare_k4", "ours_over_bare_k6", "topk_one_node_ms"):
            assert np.isfinite(row[key]) and row[key] > 0, key
        assert row["max_abs_logprob_diff"] < 1e-4
        assert row["topk_same_as_one_node_search"] and row["topk_max_rel_prob_diff"] < 1e-4
        assert 0 <= row["topk_max_abs_prob_diff"] <= row["topk_max_rel_prob_diff"]  # probabilities are <= 1
        assert row["ours_over_bare_k4"] >= 0.5  # ours includes the bare forward (timing noise aside)
