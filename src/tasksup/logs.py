"""Third-party output off the terminal: the ``tasksup`` commands print their own lines and nothing else.

:func:`quiet_third_party` (called by every command, see :mod:`tasksup.cliutil`) keeps transformers'
and huggingface_hub's logs below ERROR and their progress bars ("Loading weights") quiet, and routes
Python warnings and other libraries' log records into the ``logging`` module, whose root logger drops
them unless :func:`logged_to` writes them to a run's log file. ``TASKSUP_VERBOSE=1`` (or
``tasksup --verbose``) leaves all of it as the libraries have it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path

VERBOSE_ENV = "TASKSUP_VERBOSE"


def quiet_third_party() -> None:
    if os.environ.get(VERBOSE_ENV):
        return
    # read when transformers and huggingface_hub are imported; set their switches too if they already are
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()  # also huggingface_hub's
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import logging as hub_logging

        hub_logging.set_verbosity_error()
    logging.captureWarnings(True)  # warnings.warn -> the "py.warnings" logger -> the root logger
    root = logging.getLogger()
    if not root.handlers:  # without a handler, logging prints WARNING records to stderr (logging.lastResort)
        root.addHandler(logging.NullHandler())


@contextlib.contextmanager
def logged_to(path: str | Path):
    """Append warnings and log records that reach the root logger to ``path`` while the block runs."""
    handler = logging.FileHandler(path, encoding="utf-8", delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
