"""Task registry: named tasks g(x) over shared input spaces, grouped into families.

A *task* maps an input x (a dict of fields, JSON-serialisable) to an answer string. Tasks that can
be mixed in one prompt must share an :class:`InputSpace`, which knows how to sample x and how to
write it (the template ends with the separator, e.g. ``"{a}+{b}->"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from tasksup.errors import TasksupError

Input = dict
Sampler = Callable[[np.random.Generator], Input]


@dataclass(frozen=True)
class InputSpace:
    """Where a family's inputs come from and how they are written in a prompt."""

    name: str
    template: str  # e.g. "{a}+{b}->"; must end with `separator`
    separator: str  # the token sequence after which the answer starts ("->", "=")
    sample: Sampler = field(compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.template.endswith(self.separator):
            raise TasksupError(
                f"input space {self.name!r}: template {self.template!r} must end with its separator {self.separator!r}"
            )

    def format(self, x: Input) -> str:
        return self.template.format(**x)


@dataclass(frozen=True)
class Task:
    """One task: a name, the input space it reads, and g(x) -> answer string."""

    name: str
    inputs: InputSpace
    fn: Callable[[Input], str] = field(compare=False, repr=False)
    description: str = ""

    def answer(self, x: Input) -> str:
        out = self.fn(x)
        if not isinstance(out, str) or out == "":
            raise TasksupError(f"task {self.name!r} gave an empty or non-string answer for input {x!r}")
        return out


@dataclass(frozen=True)
class Family:
    """An ordered group of tasks over one input space (the paper's task settings)."""

    name: str
    tasks: tuple[str, ...]
    description: str = ""


_TASKS: dict[str, Task] = {}
_FAMILIES: dict[str, Family] = {}
_SPACES: dict[str, InputSpace] = {}


def register_task(task: Task, *, replace: bool = False) -> Task:
    if task.name in _TASKS and not replace:
        raise TasksupError(f"task {task.name!r} is already registered")
    known = _SPACES.get(task.inputs.name)
    if known is not None and known is not task.inputs and not replace:
        raise TasksupError(f"input space name {task.inputs.name!r} is already used by another input space")
    _SPACES[task.inputs.name] = task.inputs
    _TASKS[task.name] = task
    return task


def get_input_space(name: str) -> InputSpace:
    try:
        return _SPACES[name]
    except KeyError:
        raise TasksupError(f"unknown input space {name!r} (known: {', '.join(sorted(_SPACES))})") from None


def register_family(name: str, tasks: Iterable[str], description: str = "", *, replace: bool = False) -> Family:
    names = tuple(tasks)
    if name in _FAMILIES and not replace:
        raise TasksupError(f"family {name!r} is already registered")
    missing = [t for t in names if t not in _TASKS]
    if missing:
        raise TasksupError(f"family {name!r} names unregistered tasks: {', '.join(missing)}")
    spaces = {_TASKS[t].inputs.name for t in names}
    if len(spaces) > 1:
        raise TasksupError(f"family {name!r} mixes input spaces {sorted(spaces)}; its tasks must share one")
    fam = Family(name, names, description)
    _FAMILIES[name] = fam
    return fam


def get_task(name: str) -> Task:
    try:
        return _TASKS[name]
    except KeyError:
        raise TasksupError(f"unknown task {name!r} (see `tasksup tasks` for the registered ones)") from None


def get_family(name: str) -> Family:
    try:
        return _FAMILIES[name]
    except KeyError:
        raise TasksupError(f"unknown task family {name!r} (see `tasksup tasks`)") from None


def all_tasks() -> dict[str, Task]:
    return dict(_TASKS)


def all_families() -> dict[str, Family]:
    return dict(_FAMILIES)


def resolve_tasks(spec: str | Iterable[str], *, one_space: bool = True) -> list[Task]:
    """A family name, a task name, or a list of task and family names -> the list of tasks (in order).

    A mixture needs tasks over one input space; training (``one_space=False``) may draw its
    single-task sequences from tasks over several (the Fig. 2 model learns all four settings).
    """
    names = [spec] if isinstance(spec, str) else list(spec)
    tasks = []
    for name in names:
        if name in _FAMILIES:
            tasks += [_TASKS[t] for t in _FAMILIES[name].tasks]
        elif name in _TASKS:
            tasks.append(_TASKS[name])
        else:
            kind = "task or family" if isinstance(spec, str) else "task"
            raise TasksupError(f"unknown {kind} {name!r} (see `tasksup tasks`)")
    if not tasks:
        raise TasksupError("the task list is empty")
    if len({t.name for t in tasks}) != len(tasks):
        raise TasksupError(f"the task list repeats a task: {[t.name for t in tasks]}")
    spaces = {t.inputs.name for t in tasks}
    if one_space and len(spaces) > 1:
        raise TasksupError(
            f"tasks {[t.name for t in tasks]} read different inputs ({sorted(spaces)}); a mixture needs one input space"
        )
    return tasks
