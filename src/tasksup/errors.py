"""User-facing errors.

Anything a user can get wrong (a task name, a config key, a model path, a distribution) raises
:class:`TasksupError`; the CLI prints its message on one line and exits with status 2. Bugs stay
ordinary exceptions so that they keep their tracebacks.
"""


class TasksupError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run, with what was saved: the CLI prints the message and exits with status 130."""
