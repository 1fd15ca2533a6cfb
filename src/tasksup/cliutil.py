"""The CLI's error contract: a :class:`TasksupError` becomes one line on stderr and exit status 2."""

from __future__ import annotations

import functools

import typer

from tasksup.errors import TasksupError

ERROR_EXIT = 2


def fail(message: str) -> typer.Exit:
    """Print a one-line error; ``raise fail(...)`` exits with status 2."""
    typer.echo(f"tasksup: error: {message}", err=True)
    return typer.Exit(ERROR_EXIT)


class App(typer.Typer):
    """A Typer app whose commands report :class:`TasksupError` as a one-line error (exit 2)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("pretty_exceptions_enable", False)
        kwargs.setdefault("no_args_is_help", True)
        super().__init__(**kwargs)

    def command(self, *args, **kwargs):
        register = super().command(*args, **kwargs)

        def decorate(fn):
            @functools.wraps(fn)
            def guarded(*a, **k):
                try:
                    return fn(*a, **k)
                except TasksupError as e:
                    raise fail(str(e)) from None

            register(guarded)
            return fn

        return decorate
