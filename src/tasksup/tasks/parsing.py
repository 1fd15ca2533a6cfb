"""Read a query back from its text: the inverse of :meth:`InputSpace.format`.

``tasksup decode`` is given a prompt written by someone else; to say which task each output
answers it needs the query input x, which the prompt only holds as text ("42+17->"). The
space's template becomes a regular expression (one group per field); each field is converted to
the type the space's sampler produces for it (int or str), and the parse is accepted only if
formatting the result gives back exactly the same text.
"""

from __future__ import annotations

import re
import string
from typing import Sequence

import numpy as np

from tasksup.errors import TasksupError
from tasksup.tasks.registry import Input, InputSpace, Task

TYPE_PROBES = 16  # sampled inputs used to learn each field's type


def _field_types(space: InputSpace) -> dict[str, type]:
    rng = np.random.default_rng(0)
    seen: dict[str, set[type]] = {}
    for _ in range(TYPE_PROBES):
        for name, value in space.sample(rng).items():
            seen.setdefault(name, set()).add(type(value))
    return {name: int if types == {int} else str for name, types in seen.items()}


def _template_regex(template: str) -> re.Pattern:
    parts, named = [], set()
    for literal, field, _spec, _conv in string.Formatter().parse(template):
        parts.append(re.escape(literal))
        if field is None:
            continue
        if not field.isidentifier():
            raise TasksupError(f"template {template!r}: field {{{field}}} cannot be parsed back")
        parts.append(f"(?P={field})" if field in named else f"(?P<{field}>.+?)")
        named.add(field)
    return re.compile("".join(parts), re.DOTALL)


def parse_query(space: InputSpace, text: str) -> Input:
    """The input x with ``space.format(x) == text``; a one-line error if there is none."""
    match = _template_regex(space.template).fullmatch(text)
    where = f"query {text!r} does not match the {space.name!r} input template {space.template!r}"
    if match is None:
        raise TasksupError(where)
    types = _field_types(space)
    x = {}
    for name, value in match.groupdict().items():
        try:
            x[name] = types.get(name, str)(value)
        except ValueError:
            raise TasksupError(f"{where}: field {name!r} = {value!r} is not an integer") from None
    if space.format(x) != text:
        raise TasksupError(f"{where}: it parses as {x} but that is written {space.format(x)!r}")
    return x


def query_answers(tasks: Sequence[Task], query_text: str) -> list[str]:
    """Every task's answer to the query written ``query_text`` (the tasks share one input space)."""
    x = parse_query(tasks[0].inputs, query_text)
    answers = []
    for task in tasks:
        try:
            answers.append(task.answer(x))
        except TasksupError:
            raise
        except Exception as e:  # a task that cannot answer this input (an unknown country, a bad field)
            raise TasksupError(f"task {task.name!r} cannot answer the query {query_text!r} "
                               f"({type(e).__name__}: {e})") from None
    return answers


def example_inputs(prompt: str, delimiter: str, separator: str) -> set[str]:
    """The formatted inputs of a prompt's lines (each line up to its first ``separator``).

    What a new query must differ from, so that it does not leak its answer from the examples.
    """
    return {line[:line.find(separator) + len(separator)] for line in prompt.split(delimiter) if separator in line}
