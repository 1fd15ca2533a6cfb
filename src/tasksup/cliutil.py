"""The CLI's error contract: a :class:`TasksupError` becomes one line on stderr and exit status 2.

The error is the last line: every progress bar is closed before it is printed (a bar left open
redraws itself below it when the process exits), and third-party warnings, logs and bars never
reach the terminal (:func:`tasksup.logs.quiet_third_party`).
"""

from __future__ import annotations

import functools
import gc
import sys

import typer

from tasksup.errors import TasksupError
from tasksup.logs import quiet_third_party

ERROR_EXIT = 2
INTERRUPT_EXIT = 130  # 128 + SIGINT, as a shell reports Ctrl-C
# click's UsageError (Typer >= 0.26 vendors click as typer._click, so it is reached through a public subclass)
UsageError = typer.BadParameter.__base__


def fail(message: str) -> typer.Exit:
    """Print a one-line error; ``raise fail(...)`` exits with status 2."""
    message = " ".join(line.strip() for line in str(message).splitlines() if line.strip())
    typer.echo(f"tasksup: error: {message}", err=True)
    return typer.Exit(ERROR_EXIT)


def close_progress_bars() -> None:
    if "tqdm" in sys.modules:
        from tqdm import tqdm

        for bar in list(tqdm._instances):
            bar.close()


class App(typer.Typer):
    """A Typer app whose commands report :class:`TasksupError` as a one-line error (exit 2)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("pretty_exceptions_enable", False)
        kwargs.setdefault("no_args_is_help", True)
        kwargs.setdefault("rich_markup_mode", None)  # plain help: flags show no "<bool>" value
        super().__init__(**kwargs)

    def command(self, *args, **kwargs):
        register = super().command(*args, **kwargs)

        def decorate(fn):
            @functools.wraps(fn)
            def guarded(*a, **k):
                quiet_third_party()
                try:
                    return fn(*a, **k)
                except TasksupError as e:
                    close_progress_bars()
                    raise fail(str(e)) from None
                except KeyboardInterrupt as e:  # Ctrl-C: what was saved, if the command knows (errors.Interrupted)
                    close_progress_bars()
                    typer.echo(f"tasksup: {e or 'interrupted'}", err=True)
                    raise typer.Exit(INTERRUPT_EXIT) from None

            register(guarded)
            return fn

        return decorate


GC_FIRST_GENERATION = 50_000  # objects allocated between young collections in a CLI process (CPython: 700)


def main(app: typer.Typer) -> None:
    """Run ``app`` as a console script: as ``app()`` does, except that a usage error (an unknown
    command or option, a missing argument, a value of the wrong type) is one line too.

    The garbage collector is set for a process that imports ~500,000 long-lived objects (torch, transformers,
    scipy, matplotlib): CPython traverses all of them at every full collection (8 in a Fig. 6 run with its
    defaults, 1.0 s) and again while the interpreter shuts down (0.5-0.9 s). A larger first generation
    (:data:`GC_FIRST_GENERATION`) makes collections rare while they import; at the end, one collection (the
    finalizers of unreachable objects run as before) and a freeze spare shutdown its traversals. No number changes.
    """
    gc.set_threshold(GC_FIRST_GENERATION, *gc.get_threshold()[1:])
    try:
        code = app(standalone_mode=False)
    except UsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # a command group alone: Typer prints its help and exits
            app()
        see = f" (see '{e.ctx.command_path} --help')" if e.ctx else ""
        code = fail(e.format_message() + see).exit_code
    gc.collect()
    gc.freeze()
    sys.exit(code if isinstance(code, int) else 0)
