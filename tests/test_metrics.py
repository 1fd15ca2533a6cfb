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


def _record(example_tasks, probs, tasks=("A", "B")):
    tasks = list(tasks)
    return {"tasks": tasks, "example_tasks": example_tasks, "probs": probs,
            "logprobs": [math.log(p) if p > 0 else -math.inf for p in probs],
            "counts": [example_tasks.count(t) for t in tasks]}


def test_per_prompt_choice_by_hand():
    """Four mixed prompts and a pure one (skipped); the model copies example 1's task in 3 of 4."""
    records = [_record(["A", "B", "B"], [0.95, 0.01]),   # commits to A = example 1, minority
               _record(["B", "A", "A"], [0.02, 0.97]),   # commits to B = example 1, minority
               _record(["A", "A", "B"], [0.6, 0.4]),     # splits: A (0.6 of the pair) = example 1, majority
               _record(["B", "A", "B"], [0.92, 0.08]),   # commits to A = example 2, minority
               _record(["A", "A", "A"], [1.0, 0.0])]     # one task only: not a mixture
    got = metrics.per_prompt_choice(records, threshold=0.9)
    assert got["n_prompts"] == 4 and got["n_tied"] == 0 and got["n_majority_prompts"] == 4
    assert got["committed"] == pytest.approx(3 / 4)  # 0.95/0.96, 0.97/0.99, 0.92/1.0 >= 0.9; 0.6 is not
    assert got["follows_example_by_position"] == pytest.approx([3 / 4, 2 / 4, 0])
    assert got["follows_example_1"] == pytest.approx(3 / 4) and got["follows_last_example"] == 0
    assert got["follows_majority"] == pytest.approx(1 / 4)
    assert metrics.per_prompt_choice([_record(["A"], [1.0, 0.0])]) is None
    assert metrics.per_prompt_choice([{k: v for k, v in records[0].items() if k != "example_tasks"}]) is None


def test_per_prompt_choice_ties_and_no_majority():
    """A tie between the top tasks chooses nothing (not committed, follows no example); equal counts have no
    majority; probabilities too small for floats are compared in log space."""
    records = [_record(["A", "B"], [0.3, 0.3]),                      # tie: no chosen task
               _record(["B", "A"], [0.9, 0.05]),                     # A, committed (0.947), = last example
               {**_record(["A", "B", "B"], [0.0, 0.0]), "logprobs": [-800.0, -801.0]}]  # A, 1 / (1 + e^-1) < 0.9
    got = metrics.per_prompt_choice(records)
    assert (got["n_prompts"], got["n_tied"], got["n_majority_prompts"]) == (3, 1, 1)
    assert got["committed"] == pytest.approx(1 / 3)
    assert got["follows_example_1"] == pytest.approx(1 / 3) and got["follows_last_example"] == pytest.approx(1 / 3)
    assert got["follows_majority"] == 0  # the third prompt's majority is B; it chose A
    assert metrics.per_prompt_choice(records[:2])["follows_majority"] is None  # 1:1 counts only: no majority
    assert metrics.per_prompt_choice(records, threshold=0.7)["committed"] == pytest.approx(2 / 3)  # 0.731 >= 0.7


def _random_records(rng, k: int, n: int) -> list[dict]:
    """Prompts of K tasks with random counts (some one-task, some tied counts) and random probabilities,
    a quarter of them with two top tasks tied exactly."""
    tasks = [f"t{i}" for i in range(k)]
    out = []
    for _ in range(n):
        m = int(rng.integers(2, 7))
        example_tasks = [tasks[j] for j in rng.integers(0, rng.integers(1, k + 1), size=m)]
        probs = rng.dirichlet(np.full(k, 0.3)) * rng.uniform(0.2, 1.0)
        if rng.random() < 0.25:
            top = np.argsort(probs)[-2:]
            probs[top] = probs[top].max()
        out.append(_record(example_tasks, probs.tolist(), tasks))
    return out


@pytest.mark.parametrize("k", [2, 3, 5])
def test_per_prompt_choice_matches_a_slow_computation(k):
    from reference import slow_per_prompt_choice

    rng = np.random.default_rng(k)
    for threshold in (0.5, 0.9):
        records = _random_records(rng, k, 300)
        got, slow = metrics.per_prompt_choice(records, threshold), slow_per_prompt_choice(records, threshold)
        assert got.keys() == slow.keys()
        for key in got:
            assert got[key] == pytest.approx(slow[key]), key
        assert 0 < got["n_tied"] < got["n_prompts"] and 0 < got["n_majority_prompts"] < got["n_prompts"]


def test_k_tasks_reduce_to_two():
    """A third task with no examples and no probability changes nothing; nor does the order of the tasks."""
    records = _random_records(np.random.default_rng(7), 2, 200)
    two = metrics.per_prompt_choice(records)
    three = [{**r, "tasks": r["tasks"] + ["C"], "counts": r["counts"] + [0], "probs": r["probs"] + [0.0],
              "logprobs": r["logprobs"] + [-math.inf]} for r in records]
    assert metrics.per_prompt_choice(three) == two
    flipped = [{**r, "tasks": r["tasks"][::-1], "counts": r["counts"][::-1], "probs": r["probs"][::-1],
                "logprobs": r["logprobs"][::-1]} for r in records]
    assert metrics.per_prompt_choice(flipped) == two


def test_choice_columns_read_both_formats():
    new = metrics.per_prompt_choice([_record(["A", "B", "B"], [0.95, 0.01]), _record(["B", "A"], [0.2, 0.7])])
    assert metrics.choice_columns(new) == {"committed": 0.5, "follows_example_1": 1.0, "follows_last_example": 0.0,
                                           "follows_majority": 0.0}  # B has the majority of the first; A chosen
    old = {"n_prompts": 2, "threshold": 0.9, "committed": 0.5, "follows_example": [1.0, 0.5, 0.0], "follows_majority": None}
    assert metrics.choice_columns(old) == {"committed": 0.5, "follows_example_1": 1.0, "follows_last_example": 0.0,
                                           "follows_majority": None}
    assert metrics.choice_columns(None) == dict.fromkeys(metrics.CHOICE_COLUMNS)
