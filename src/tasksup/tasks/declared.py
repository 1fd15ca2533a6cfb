"""Tasks declared in YAML, so that a new task needs no Python.

```yaml
input_spaces:                 # optional: new inputs (or reuse: num, pair_arrow, pair_at, word, country, chars8)
  - name: pair_times
    template: "{a}*{b}="
    separator: "="
    fields: {a: {int: [2, 9]}, b: {int: [2, 9]}}   # or {choice: [..]}
tasks:
  - name: mul
    input: pair_times
    answer: "str(a * b)"       # an expression over the fields (see SAFE_FUNCTIONS)
families:
  - name: times
    tasks: [mul]
```
Answers are expressions over the input fields, evaluated by a small whitelist interpreter (never
``eval``): arithmetic, indexing/slicing, ``str``/``int``/``abs``/``len``/``min``/``max``/``words(n, lang)``
and the string methods ``upper``/``lower``/``strip``.
"""

from __future__ import annotations

import ast
import operator
from pathlib import Path
from typing import Any

import numpy as np

from tasksup.config import read_yaml
from tasksup.errors import TasksupError
from tasksup.tasks.data import number_words
from tasksup.tasks.registry import InputSpace, Task, get_input_space, register_family, register_task

SAFE_FUNCTIONS = {"str": str, "int": int, "abs": abs, "len": len, "min": min, "max": max, "words": number_words}
SAFE_METHODS = {"upper", "lower", "strip", "title"}
MAX_EXPONENT = 64  # answers are short strings: refuse 9**9**9 rather than hang computing it
MAX_REPEAT = 1000  # and "a" * 10**9 rather than exhaust memory


def _bounded_pow(base, exponent):
    if isinstance(exponent, int) and abs(exponent) > MAX_EXPONENT:
        raise TasksupError(f"exponent {exponent} is larger than {MAX_EXPONENT}")
    return operator.pow(base, exponent)


def _bounded_mul(a, b):
    if (isinstance(a, str) and isinstance(b, int) and b > MAX_REPEAT) or (
            isinstance(b, str) and isinstance(a, int) and a > MAX_REPEAT):
        raise TasksupError(f"a string repeated more than {MAX_REPEAT} times")
    return operator.mul(a, b)


_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: _bounded_mul, ast.FloorDiv: operator.floordiv,
           ast.Mod: operator.mod, ast.Pow: _bounded_pow}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}


_ALLOWED_NODES = (ast.Expression, ast.Constant, ast.Name, ast.Load, ast.BinOp, ast.UnaryOp, ast.Subscript,
                  ast.Slice, ast.Call, ast.Attribute, *_BINOPS, *_UNARY)


def compile_answer(expr: str, fields: set[str]) -> ast.Expression:
    """Parse an answer expression and check it uses only whitelisted constructs and known fields."""
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as e:
        raise TasksupError(f"answer expression {expr!r} is not valid: {e.msg}") from None
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_NODES) or (isinstance(node, ast.Call) and node.keywords):
            raise TasksupError(f"answer expression {expr!r}: {type(node).__name__} is not allowed")
        if isinstance(node, ast.Name) and node.id not in fields and node.id not in SAFE_FUNCTIONS:
            raise TasksupError(f"answer expression {expr!r} uses unknown name {node.id!r} (fields: {sorted(fields)})")
        if isinstance(node, ast.Attribute) and node.attr not in SAFE_METHODS:
            raise TasksupError(f"answer expression {expr!r} calls .{node.attr}(); allowed: {sorted(SAFE_METHODS)}")
        if isinstance(node, ast.Call) and not (
            (isinstance(node.func, ast.Name) and node.func.id in SAFE_FUNCTIONS) or isinstance(node.func, ast.Attribute)
        ):
            raise TasksupError(f"answer expression {expr!r} calls something that is not a whitelisted function")
    return tree


def _evaluate(node: ast.AST, env: dict[str, Any]) -> Any:
    """Evaluate a tree that :func:`compile_answer` accepted."""
    ev = lambda n: _evaluate(n, env)  # noqa: E731
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return env[node.id] if node.id in env else SAFE_FUNCTIONS[node.id]
    if isinstance(node, ast.BinOp):
        return _BINOPS[type(node.op)](ev(node.left), ev(node.right))
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](ev(node.operand))
    if isinstance(node, ast.Subscript):
        return ev(node.value)[ev(node.slice)]
    if isinstance(node, ast.Slice):
        return slice(*(ev(p) if p is not None else None for p in (node.lower, node.upper, node.step)))
    if isinstance(node.func, ast.Attribute):  # ast.Call on a whitelisted string method
        return getattr(str(ev(node.func.value)), node.func.attr)(*(ev(a) for a in node.args))
    return ev(node.func)(*(ev(a) for a in node.args))


def _field_sampler(spec: dict, where: str):
    if not isinstance(spec, dict) or len(spec) != 1:
        raise TasksupError(f"{where}: a field is {{int: [lo, hi]}} or {{choice: [...]}}, got {spec!r}")
    (kind, arg), = spec.items()
    if kind == "int" and isinstance(arg, list) and len(arg) == 2 and all(isinstance(v, int) for v in arg) and arg[0] <= arg[1]:
        lo, hi = arg
        return lambda rng: int(rng.integers(lo, hi + 1))
    if kind == "choice" and isinstance(arg, list) and arg:
        values = list(arg)
        return lambda rng: values[int(rng.integers(len(values)))]
    raise TasksupError(f"{where}: bad field spec {spec!r} (use {{int: [lo, hi]}} or {{choice: [...]}})")


def _space(spec: dict) -> InputSpace:
    missing = {"name", "template", "separator", "fields"} - set(spec)
    if missing:
        raise TasksupError(f"input space {spec.get('name', '?')!r} lacks {sorted(missing)}")
    if not isinstance(spec["fields"], dict):
        raise TasksupError(f"input space {spec['name']!r}: fields must be a mapping of field name to spec")
    samplers = {f: _field_sampler(s, f"input space {spec['name']!r}, field {f!r}") for f, s in spec["fields"].items()}

    def sample(rng: np.random.Generator) -> dict:
        return {f: s(rng) for f, s in samplers.items()}

    return InputSpace(spec["name"], spec["template"], spec["separator"], sample)


def load_task_file(path: str | Path) -> list[str]:
    """Register the input spaces, tasks and families of a YAML file; returns the task names added."""
    path = Path(path)
    doc = read_yaml(path, "task file")
    unknown = set(doc) - {"input_spaces", "tasks", "families"}
    if unknown:
        raise TasksupError(f"task file {str(path)!r}: unknown keys {sorted(unknown)}")
    for key, needs in (("input_spaces", ()), ("tasks", ()), ("families", ("name", "tasks"))):
        entries = doc.get(key, [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) and set(needs) <= set(e) for e in entries):
            what = f"mappings with {' and '.join(needs)}" if needs else "mappings"
            raise TasksupError(f"task file {str(path)!r}: {key} must be a list of {what}, got {entries!r}")
    spaces = {s["name"]: _space(s) for s in doc.get("input_spaces", [])}
    added = []
    for t in doc.get("tasks", []):
        if not {"name", "input", "answer"} <= set(t):
            raise TasksupError(f"task file {str(path)!r}: each task needs name, input and answer; got {t!r}")
        space = spaces.get(t["input"]) or get_input_space(t["input"])
        probe = space.sample(np.random.default_rng(0))
        tree = compile_answer(str(t["answer"]), set(probe))
        fn = (lambda tree: lambda x: str(_evaluate(tree.body, x)))(tree)
        try:
            fn(probe)
        except Exception as e:  # a user's expression failing on a real input: report it, do not crash
            raise TasksupError(f"task {t['name']!r}: answer {t['answer']!r} fails on input {probe}: {e}") from None
        register_task(Task(t["name"], space, fn, t.get("description", f"declared in {path.name}")))
        added.append(t["name"])
    for f in doc.get("families", []):
        register_family(f["name"], f["tasks"], f.get("description", ""))
    return added
