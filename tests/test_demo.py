"""`make demo`'s verdict lines: superposed inside a prompt, on average only, or not at all, from summary numbers."""

from __future__ import annotations

import pytest

from tasksup import demo


def _q(mean, median):
    return {"mean": mean, "median": median, "q1": 0.0, "q3": 1.0}


def _fig3(med_a, med_b, mean_a, mean_b, min_sum=0.99, pearson=0.99):
    choice = {"n_prompts": 100, "threshold": 0.9, "committed": 0.97, "follows_example_1": 0.99}
    return {"tasks": ["ret2", "ret6"], "min_mean_sum": min_sum, "pearson_mean_a_vs_lambda": pearson,
            "per_lambda": [{"lambda": 0.4, "ret2": _q(0.9, 0.9), "ret6": _q(0.9, 0.9), "per_prompt": None},
                           {"lambda": 0.5, "ret2": _q(mean_a, med_a), "ret6": _q(mean_b, med_b), "per_prompt": choice}]}


@pytest.mark.parametrize("summary, verdict", [
    (_fig3(0.45, 0.5, 0.46, 0.52), "superposes INSIDE a prompt"),
    (_fig3(0.0, 1.0, 0.46, 0.53), "superposes ON AVERAGE ONLY"),
    (_fig3(0.0, 0.0, 0.13, 0.15, min_sum=0.28, pearson=0.9), "does NOT superpose"),
    (_fig3(0.0, 1.0, 0.46, 0.53, pearson=0.96), "does NOT superpose"),  # one mean criterion fails
    (_fig3(0.0, 1.0, 0.46, 0.53, pearson=None), "does NOT superpose"),  # too few lambdas for a correlation
    (_fig3(0.2, 0.2, 0.1, 0.1, min_sum=0.2, pearson=0.5), "superposes INSIDE a prompt"),  # medians decide alone
])
def test_fig3_verdict(summary, verdict):
    line = demo.fig3_verdict(summary)
    assert line.startswith(f"verdict: {verdict}")
    e = summary["per_lambda"][1]
    assert f"median P(ret2) = {e['ret2']['median']:.2f}, median P(ret6) = {e['ret6']['median']:.2f}" in line
    assert "97% of 100 prompts committed" in line and "99% follow example 1's task" in line
    assert "\n" not in line


def _fig2(medians, means, choice=True):
    tasks = [f"t{i}" for i in range(len(medians))]
    return {"tasks": tasks, "per_task": {t: _q(mean, med) for t, med, mean in zip(tasks, medians, means)},
            "per_prompt": {"n_prompts": 40, "threshold": 0.9, "committed": 0.25, "follows_example_1": 0.5}
            if choice else None}


@pytest.mark.parametrize("summary, verdict, counts", [
    (_fig2([0.3, 0.2, 0.05], [0.3, 0.3, 0.1]), "superposes INSIDE a prompt", "2 of 3"),
    (_fig2([0.9, 0.1, 0.0, 0.0], [0.6, 0.3, 0.05, 0.05]), "superposes ON AVERAGE ONLY", "1 of 4"),  # 0.1 is not > 0.1
    (_fig2([0.97, 0.0, 0.0], [0.9, 0.05, 0.05]), "puts its mass on ONE task", "1 of 3"),
])
def test_fig2_verdict(summary, verdict, counts):
    line = demo.fig2_verdict(summary)
    assert line.startswith(f"verdict: {verdict}") and f"median P > 0.1: {counts}" in line
    assert "25% of 40 prompts committed" in line and "50% follow example 1's task" in line


def test_fig2_verdict_without_mixed_prompts():
    assert "no prompt holds examples of two tasks" in demo.fig2_verdict(_fig2([1.0, 0.0], [1.0, 0.0], choice=False))
