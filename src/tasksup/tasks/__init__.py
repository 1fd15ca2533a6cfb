"""Task registry, the paper's task families and the mixture prompt builder."""

from tasksup.tasks.declared import load_task_file
from tasksup.tasks.families import register_paper_families
from tasksup.tasks.parsing import example_inputs, parse_query, query_answers
from tasksup.tasks.prompts import (MixturePrompt, PromptBuilder, TrainingSequence, check_fits, example_counts,
                                   mixed_training_sequence, normalize_mixture)
from tasksup.tasks.registry import (
    Family,
    InputSpace,
    Task,
    all_families,
    all_tasks,
    get_family,
    get_input_space,
    get_task,
    register_family,
    register_task,
    resolve_tasks,
)

register_paper_families()

__all__ = [
    "Family", "InputSpace", "MixturePrompt", "PromptBuilder", "Task", "TrainingSequence", "all_families", "all_tasks",
    "check_fits", "example_counts", "example_inputs", "get_family", "get_input_space", "get_task", "load_task_file",
    "mixed_training_sequence", "normalize_mixture", "parse_query", "query_answers",
    "register_family", "register_task", "resolve_tasks",
]
