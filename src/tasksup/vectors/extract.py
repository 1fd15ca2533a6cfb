"""Task vectors (Hendel et al. 2023; paper App. C): hidden states at the query's separator token.

For one task, N prompts of m examples and a query; the output of every decoder layer ℓ at the
prompt's last token (the last token of the separator, ``=`` or ``->``) is averaged over the
prompts: v(ℓ). All layers are read in the same forward passes.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from tasksup.tasks import MixturePrompt, PromptBuilder, Task
from tasksup.vectors.hooks import capturing

# numpy seed streams: prompt i of a stream is drawn from default_rng([seed, stream, task/mixture index, i])
EXTRACT_STREAM, QUERY_STREAM = 11, 12


def padded_batch(lm, texts: Sequence[str]) -> dict:
    """Left-padded token ids with explicit positions, so that every row's last token is column -1."""
    rows = [lm.encode(t) for t in texts]
    for r in rows:
        lm._check_length(len(r))
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), lm.pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r)
        mask[i, width - len(r):] = 1
    device = next(lm.model.parameters()).device
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "position_ids": pos.to(device)}


@torch.inference_mode()
def last_token_states(lm, texts: Sequence[str], batch_size: int | None = None, progress: bool = False) -> torch.Tensor:
    """The output of every decoder layer at each text's last token: float32 [n, n_layers, d]."""
    bs = batch_size or lm.batch_size
    out = []
    for start in tqdm(range(0, len(texts), bs), desc="hidden states", disable=not progress, leave=False):
        with capturing(lm.model, position=-1) as cap:
            lm.model(**padded_batch(lm, texts[start:start + bs]), use_cache=False)
        out.append(cap.stacked())
    return torch.cat(out)


def task_prompts(task: Task, n: int, m: int, seed: int, task_index: int, delimiter: str = "\n") -> list[MixturePrompt]:
    """The N single-task prompts (m examples + a query) a task vector is averaged over."""
    builder = PromptBuilder([task], delimiter)
    return [builder.build("uniform", m, np.random.default_rng([seed, EXTRACT_STREAM, task_index, i]))
            for i in range(n)]


def task_vectors(lm, tasks: Sequence[Task], *, n_prompts: int, n_examples: int, seed: int, delimiter: str = "\n",
                 progress: bool = False) -> dict[str, torch.Tensor]:
    """v(ℓ) for every layer ℓ: ``{task name: float32 [n_layers, d]}``, each the mean over ``n_prompts`` prompts."""
    out = {}
    for k, task in enumerate(tasks):
        prompts = task_prompts(task, n_prompts, n_examples, seed, k, delimiter)
        out[task.name] = last_token_states(lm, [p.text for p in prompts], progress=progress).mean(0)
    return out


def lone_queries(task: Task, n: int, seed: int, task_index: int = 0) -> list[tuple[str, str]]:
    """N lone queries ``(query text, the task's answer)``: the query input alone, e.g. ``"12@34="``."""
    builder = PromptBuilder([task])
    out = []
    for i in range(n):
        x = builder.space.sample(np.random.default_rng([seed, QUERY_STREAM, task_index, i]))
        out.append((builder.query_text(x), task.answer(x)))
    return out
