"""Decoding from superposition: exact top-k with task attribution, sampling, greedy, Superposed Decoding.

- :func:`decode` / ``LanguageModel.decode_superposed``: the k most probable complete outputs of
  one prompt (exact, best-first search), each attributed to the task it answers.
- :func:`sample_outputs`, :func:`greedy_output`: the conventional decoders, after one prompt pass.
- :func:`superposed_decode`: Shen et al. (2024), one forward pass per step for k drafts.

Docs and measured numbers: ``docs/decoding.md``.
"""

from tasksup.decoding.attribution import (Decoded, TaskShare, attribute, decode, default_max_tokens, query_line,
                                          task_answers, task_mixture)
from tasksup.decoding.generate import Generation, PromptState, greedy_output, sample_outputs
from tasksup.decoding.superposed import SuperposedResult, superposed_decode

__all__ = ["Decoded", "Generation", "PromptState", "SuperposedResult", "TaskShare", "attribute", "decode",
           "default_max_tokens", "greedy_output", "query_line", "sample_outputs", "superposed_decode",
           "task_answers", "task_mixture"]
