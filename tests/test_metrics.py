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
