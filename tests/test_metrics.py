"""Metrics on hand-computed cases."""

import math

import numpy as np
import pytest

from tasksup import metrics


def test_two_tasks_half_mass():
    d, p = [0.5, 0.5], np.array([0.25, 0.25])
    assert metrics.other_mass(p) == pytest.approx(0.5)
    assert metrics.kl_paper(d, np.log(p)) == pytest.approx(math.log(2))  # 2 * 0.5 * ln(0.5 / 0.25)
    assert metrics.kl_normalized(d, np.log(p)) == pytest.approx(0.0, abs=1e-12)  # P/sum P = D


def test_zero_weight_task_is_skipped():
    d, p = [1.0, 0.0], np.array([0.5, 0.1])
    assert metrics.kl_paper(d, np.log(p)) == pytest.approx(math.log(2))  # ln(1 / 0.5)
    assert metrics.kl_normalized(d, np.log(p)) == pytest.approx(math.log(6 / 5))  # P/sum P = [5/6, 1/6]


def test_uniform_four_tasks():
    d, p = [0.25] * 4, np.array([0.4, 0.3, 0.2, 0.05])
    expected = 0.25 * (math.log(0.25 / 0.4) + math.log(0.25 / 0.3) + math.log(0.25 / 0.2) + math.log(0.25 / 0.05))
    assert metrics.kl_paper(d, np.log(p)) == pytest.approx(expected)
    q = p / 0.95
    assert metrics.kl_normalized(d, np.log(p)) == pytest.approx(sum(0.25 * math.log(0.25 / x) for x in q))
    assert metrics.other_mass(p) == pytest.approx(0.05)


def test_tiny_probabilities_need_no_clipping():
    lp = np.array([-700.0, -1.0])  # exp(-700) underflows nothing in log space
    assert metrics.kl_paper([0.5, 0.5], lp) == pytest.approx(0.5 * (math.log(0.5) + 700) + 0.5 * (math.log(0.5) + 1))
    assert metrics.kl_normalized([0.5, 0.5], lp) == pytest.approx(0.5 * (math.log(0.5) + 699) + 0.5 * math.log(0.5))


def test_batched_rows():
    lp = np.log(np.array([[0.25, 0.25], [0.5, 0.5]]))
    assert np.allclose(metrics.kl_paper([0.5, 0.5], lp), [math.log(2), 0.0])
    assert np.allclose(metrics.other_mass(np.exp(lp)), [0.5, 0.0])


def test_r_and_quartiles():
    assert metrics.tasks_in_top(["174", "one", "cent"], ["174", "17", "cent", "x"]) == 2
    assert metrics.tasks_in_top(["a"], []) == 0
    assert metrics.quartiles([1, 2, 3, 4]) == {"mean": 2.5, "median": 2.5, "q1": 1.75, "q3": 3.25}


def _record(example_tasks, probs):
    tasks = ["A", "B"]
    return {"tasks": tasks, "example_tasks": example_tasks, "probs": probs,
            "counts": [example_tasks.count(t) for t in tasks]}


def test_per_prompt_choice_by_hand():
    """Four mixed prompts and a pure one (skipped); the model copies example 1's task in 3 of 4."""
    records = [_record(["A", "B", "B"], [0.95, 0.01]),   # commits to A = example 1, minority
               _record(["B", "A", "A"], [0.02, 0.97]),   # commits to B = example 1, minority
               _record(["A", "A", "B"], [0.6, 0.4]),     # splits: A (0.6 of the pair) = example 1, majority
               _record(["B", "A", "B"], [0.92, 0.08]),   # commits to A = example 2, minority
               _record(["A", "A", "A"], [1.0, 0.0])]     # one task only: not a mixture
    got = metrics.per_prompt_choice(records, threshold=0.9)
    assert got["n_prompts"] == 4
    assert got["committed"] == pytest.approx(3 / 4)  # 0.95/0.96, 0.97/0.99, 0.92/1.0 >= 0.9; 0.6 is not
    assert got["follows_example"] == pytest.approx([3 / 4, 2 / 4, 0])
    assert got["follows_majority"] == pytest.approx(1 / 4)
    assert metrics.per_prompt_choice([_record(["A"], [1.0, 0.0])]) is None
    assert metrics.per_prompt_choice([{k: v for k, v in records[0].items() if k != "example_tasks"}]) is None
