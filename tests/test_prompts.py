"""The mixture prompt builder: counts, order, reproducibility, no query leak, collision resampling."""

import itertools
from collections import Counter

import numpy as np
import pytest

from tasksup import PromptBuilder, TasksupError, resolve_tasks
from tasksup.tasks import InputSpace, Task, example_counts, normalize_mixture


@pytest.mark.parametrize("mixture, m, expected", [
    ([0.25] * 4, 80, [20, 20, 20, 20]),
    ([1 / 3] * 3, 7, [3, 2, 2]),  # 2.33 each: the one extra example goes to the earliest task
    ([0.5, 0.25, 0.25], 10, [5, 3, 2]),  # remainders 0, .5, .5: the tie goes to the earlier task
    ([1 / 12, 11 / 12], 20, [2, 18]),  # 1.67 / 18.33: the larger remainder wins
    ([0.1, 0.2, 0.7], 9, [1, 2, 6]),  # 0.9 / 1.8 / 6.3: floors 0, 1, 6; remainders .9 and .8 get one each
    ([0.0, 1.0], 5, [0, 5]),
])
def test_largest_remainder_counts(mixture, m, expected):
    assert example_counts(np.array(mixture), m) == expected


def test_counts_too_small():
    with pytest.raises(TasksupError, match="too small"):
        example_counts(np.array([0.9, 0.05, 0.05]), 10)


def test_normalize_mixture():
    assert np.allclose(normalize_mixture("uniform", 4), [0.25] * 4)
    d = normalize_mixture(["1/12", "11/12"], 2)
    assert d[0] == pytest.approx(1 / 12, abs=1e-15) and d.sum() == 1.0
    assert np.allclose(normalize_mixture([0.5, "1/4", 0.25], 3), [0.5, 0.25, 0.25])


@pytest.mark.parametrize("mixture, message", [
    ([0.5, 0.6], "sums to"),
    ([0.083] * 12, "sums to"),  # rounded decimals are refused: write "1/12"
    ([0.5, 0.5, 0.0], "3 entries but there are 2"),
    ([1.5, -0.5], "negative"),
    (["1/0", 1], "not a number"),
    (["half", "half"], "not a number"),
    ([True, False], "not a probability"),
    ("skewed", "uniform"),
])
def test_normalize_mixture_errors(mixture, message):
    k = 12 if len(mixture) == 12 else 2
    with pytest.raises(TasksupError, match=message):
        normalize_mixture(mixture, k)


def test_counts_order_and_reproducibility():
    b = PromptBuilder(resolve_tasks("add_translate"))
    p = b.build([0.5, 0.25, "1/8", "1/8"], 16, np.random.default_rng(1))
    assert p.counts == [8, 4, 2, 2]
    assert Counter(p.example_tasks) == {"add": 8, "add_en": 4, "add_fr": 2, "add_es": 2}
    lines = p.text.split("\n")
    assert len(lines) == 17 and lines[-1] == p.query_text and p.query_text.endswith("->")
    for line, task in zip(lines, p.example_tasks):  # each example line is its task's answer
        a, b_ = map(int, line.split("->")[0].split("+"))
        assert line == f"{a}+{b_}->" + resolve_tasks([task])[0].answer({"a": a, "b": b_})
    again = b.build([0.5, 0.25, "1/8", "1/8"], 16, np.random.default_rng(1))
    assert again.text == p.text and again.answers == p.answers
    assert b.build([0.5, 0.25, "1/8", "1/8"], 16, np.random.default_rng(2)).text != p.text
    blocked = b.build("uniform", 12, np.random.default_rng(1), order="blocked")
    assert blocked.example_tasks == ["add"] * 3 + ["add_en"] * 3 + ["add_fr"] * 3 + ["add_es"] * 3
    shuffled = [b.build("uniform", 12, np.random.default_rng(s)).example_tasks for s in range(5)]
    assert any(t != blocked.example_tasks for t in shuffled)
    assert all(sorted(t) == sorted(blocked.example_tasks) for t in shuffled)
    with pytest.raises(TasksupError, match="order"):
        b.build("uniform", 12, np.random.default_rng(1), order="sorted")


def scripted_space(name: str, values: list[int]) -> InputSpace:
    """An input space that hands out ``values`` in order (then repeats the last): forces leaks/collisions."""
    it = itertools.chain(values, itertools.repeat(values[-1]))
    return InputSpace(name, "{n}->", "->", lambda rng: {"n": next(it)})


def test_query_never_among_examples_and_leaks_counted():
    space = scripted_space("test_scripted_leak", [3, 4, 3, 4, 3, 7])  # 2 examples, then queries 3, 4, 3, 7
    tasks = [Task("test_leak_id", space, lambda x: str(x["n"])), Task("test_leak_sq", space, lambda x: str(x["n"] ** 2))]
    p = PromptBuilder(tasks).build("uniform", 2, np.random.default_rng(0), terminator="\n")
    assert p.query == {"n": 7} and p.leak_resamples == 3 and p.collision_resamples == 0
    assert p.query_text not in p.text.split("\n")[:-1]


def test_query_never_leaks_on_a_real_family():
    b = PromptBuilder(resolve_tasks("numeric6"))  # 90 possible inputs, 60 examples: leaks are frequent
    leaks = 0
    for seed in range(20):
        p = b.build("uniform", 60, np.random.default_rng(seed))
        assert p.query_text not in p.text.split("\n")[:-1]
        leaks += p.leak_resamples
    assert leaks > 0


def test_collisions_resampled_and_counted():
    # copy_add with a = b: copy_op1 == copy_op2; the scripted draws give 2 such queries, then a good one
    examples = [{"a": 10, "b": 20}, {"a": 11, "b": 21}, {"a": 13, "b": 23}]
    draws = examples + [{"a": 30, "b": 30}, {"a": 45, "b": 45}, {"a": 12, "b": 34}]
    it = iter(draws)
    pair = InputSpace("test_scripted_pair", "{a}@{b}=", "=", lambda rng: next(it))
    copy_add = [Task(f"test_{t.name}", pair, t.fn) for t in resolve_tasks("copy_add")]
    p = PromptBuilder(copy_add).build("uniform", 3, np.random.default_rng(0), terminator="\n")
    assert p.collision_resamples == 2 and p.answers == ["12", "34", "46"]


@pytest.mark.parametrize("terminator, query, collisions", [(None, 7, 1), ("\n", 10, 0)])
def test_prefix_collision_only_without_terminator(terminator, query, collisions):
    space = scripted_space(f"test_scripted_prefix_{terminator is None}", [2, 3, 10, 7])  # 10 -> "10", "100"
    tasks = [Task(f"test_id_{terminator is None}", space, lambda x: str(x["n"])),
             Task(f"test_sq_{terminator is None}", space, lambda x: str(x["n"] ** 2))]
    p = PromptBuilder(tasks).build("uniform", 2, np.random.default_rng(0), terminator=terminator)
    assert p.query == {"n": query} and p.collision_resamples == collisions


def test_impossible_query_is_an_error():
    space = scripted_space("test_scripted_same", [5])
    tasks = [Task("test_same_a", space, lambda x: "x"), Task("test_same_b", space, lambda x: "x")]
    with pytest.raises(TasksupError, match="distinct answers"):
        PromptBuilder(tasks).build("uniform", 2, np.random.default_rng(0))


def test_builder_errors():
    with pytest.raises(TasksupError, match="input space"):
        PromptBuilder(resolve_tasks(["add"]) + resolve_tasks(["capital"]))
    with pytest.raises(TasksupError):
        PromptBuilder([])


def test_training_sequence_spans():
    b = PromptBuilder(resolve_tasks("copy_add"))
    task = resolve_tasks(["add_ops"])[0]
    seq = b.training_sequence(task, 5, np.random.default_rng(0))
    lines = seq.text.split("\n")
    assert seq.text.endswith("\n") and len(lines) == 6 and len(seq.answer_spans) == 5
    for (s, e), line in zip(seq.answer_spans, lines):
        a, rest = line.split("@")
        assert seq.text[s:e] == str(int(a) + int(rest.split("=")[0])) and seq.text[e] == "\n"
