"""Theorem 1 as a runnable transformer: explicit weights that perform K tasks in superposition.

>>> from tasksup.theory import CopyTask, SmoothTask, build_superposition_transformer, sample_prompt
>>> tasks = [CopyTask(position=1, dim=4), SmoothTask(position=2, dim=4, fn_name="sin")]
>>> model = build_superposition_transformer(tasks, d=4, m=16, n=6)          # exact variant
>>> prompt = sample_prompt(tasks, m=16, n=6, rng=numpy.random.default_rng(0))
>>> trace = model.run(prompt.tokens, prompt.is_eq)
>>> trace.output, trace.task_weights   # sum_k w_k g~_k(x_query), w_k ~ p_k

See docs/theory.md for the stage-by-stage mapping to Appendix D.
"""

from __future__ import annotations

from typing import Sequence

from tasksup.theory.construction import (NUM_LAYERS, VARIANTS, Constants, TransformerWeights, build_weights,
                                         exact_logit_knots)
from tasksup.theory.layout import ResidualLayout, position_bits, sequence_length
from tasksup.theory.model import SuperpositionTransformer, Trace
from tasksup.theory.prompts import (Prompt, proportions_by_counting, random_counts, sample_prompt,
                                    superposed_output)
from tasksup.theory.tasks import SMOOTH_FUNCTIONS, CopyTask, ReluSum, SmoothTask, Task, random_tasks
from tasksup.theory.verify import verify


def build_superposition_transformer(tasks: Sequence[Task], d: int, m: int, n: int, variant: str = "exact",
                                    constants: Constants | None = None) -> SuperpositionTransformer:
    """Theorem 1's seven-layer, K-head transformer for ``tasks`` on ``m`` examples of length ``n``.

    ``variant="sigmoid"`` weights task k by ``1/(1 + e^{1-2p_k})`` (eq. 34); ``"exact"`` by ``p_k``.
    The weights are ``model.construction`` (a :class:`TransformerWeights`).
    """
    return SuperpositionTransformer(build_weights(tasks, d, m, n, variant, constants))


__all__ = [
    "NUM_LAYERS", "SMOOTH_FUNCTIONS", "VARIANTS", "Constants", "CopyTask", "Prompt", "ReluSum", "ResidualLayout",
    "SmoothTask", "SuperpositionTransformer", "Task", "Trace", "TransformerWeights", "build_superposition_transformer",
    "build_weights", "exact_logit_knots", "position_bits", "proportions_by_counting", "random_counts", "random_tasks",
    "sample_prompt", "sequence_length", "superposed_output", "verify",
]
