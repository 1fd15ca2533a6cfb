"""tasksup: task superposition in language models.

>>> import tasksup
>>> lm = tasksup.load_model("path/or/hub-id")
>>> lm.answer_probs(prompts, answers)          # [n, K] exact answer probabilities (Eq. 3)
>>> lm.top_outputs(prompt, k=6, stop="\\n")    # exact k most probable complete outputs
"""

from tasksup.errors import TasksupError
from tasksup.models import load_model
from tasksup.tasks import PromptBuilder, get_family, get_task, register_task, resolve_tasks

__version__ = "0.1.0"


def __getattr__(name: str):
    """``LanguageModel`` on first use: it imports torch and transformers, which take seconds, and the CLI
    checks its input before it needs them."""
    if name == "LanguageModel":
        from tasksup.models import LanguageModel

        return LanguageModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["LanguageModel", "PromptBuilder", "TasksupError", "get_family", "get_task", "load_model",
           "register_task", "resolve_tasks", "__version__"]
