"""Function vectors (Todd et al. 2024): the summed outputs of the attention heads that carry the task.

1. Mean head activations: each head's output at the query's last token, averaged over N clean
   single-task ICL prompts (the heads' slices of the attention output projection's input).
2. Causal indirect effect (CIE) of each head: on *corrupted* prompts (the same examples with their
   answers shuffled among them, so the task cannot be read off the context), put the head's mean
   activation in at the last token and measure the gain in P(correct answer).
3. Function vector = sum over the top heads by CIE of their mean contribution to the residual
   stream (the mean activation through the head's block of the output projection, without bias).

It is *added* (``Patch(mode="add")``) to the residual stream at the last token of a lone query.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from tasksup.errors import TasksupError
from tasksup.tasks import MixturePrompt
from tasksup.vectors.extract import padded_batch
from tasksup.vectors.hooks import HeadPatch, attention_out_projs, capturing_heads, head_count, patching_heads


@torch.inference_mode()
def mean_head_activations(lm, texts: Sequence[str], batch_size: int | None = None) -> torch.Tensor:
    """Each head's output at the last token, averaged over ``texts``: float32 [n_layers, n_heads, head_dim]."""
    bs = batch_size or lm.batch_size
    rows = []
    for start in range(0, len(texts), bs):
        with capturing_heads(lm.model, position=-1) as cap:
            lm.model(**padded_batch(lm, texts[start:start + bs]), use_cache=False)
        rows.append(cap.stacked())
    mean = torch.cat(rows).mean(0)  # [n_layers, n_heads * head_dim]
    return mean.reshape(mean.shape[0], head_count(lm.model), -1)


def corrupted_text(prompt: MixturePrompt, separator: str, delimiter: str, rng: np.random.Generator) -> str:
    """The prompt with its examples' answers shuffled among the examples (the query is kept)."""
    lines = prompt.text.split(delimiter)
    inputs, answers = [], []
    for line in lines[:-1]:
        cut = line.find(separator)
        if cut < 0:
            raise TasksupError(f"cannot split the example {line!r} at its separator {separator!r}")
        inputs.append(line[:cut + len(separator)])
        answers.append(line[cut + len(separator):])
    shuffled = [answers[i] for i in rng.permutation(len(answers))]
    return delimiter.join([x + a for x, a in zip(inputs, shuffled)] + [lines[-1]])


def causal_indirect_effects(lm, means: torch.Tensor, corrupted: Sequence[str], answers: Sequence[str],
                            terminator: str | None = None, progress: bool = False) -> np.ndarray:
    """[n_layers, n_heads]: mean over prompts of P(answer | corrupted, head := mean) - P(answer | corrupted)."""
    base = lm.answer_probs(list(corrupted), [[a] for a in answers], terminator)[:, 0]
    n_layers, n_heads, _ = means.shape
    cie = np.zeros((n_layers, n_heads))
    bar = tqdm(total=n_layers * n_heads, desc="heads (CIE)", disable=not progress, leave=False)
    for layer in range(n_layers):
        for head in range(n_heads):
            with patching_heads(lm.model, [HeadPatch(layer, head, means[layer, head])]):
                patched = lm.answer_probs(list(corrupted), [[a] for a in answers], terminator)[:, 0]
            cie[layer, head] = float(np.mean(patched - base))
            bar.update(1)
    bar.close()
    return cie


@torch.inference_mode()
def head_contributions(model, means: torch.Tensor) -> torch.Tensor:
    """Each head's mean output written into the residual stream: [n_layers, n_heads, d].

    The output projection is applied to the head's activation with every other head zeroed, minus
    its output on zeros (the bias), so it works for ``nn.Linear`` and GPT-2's ``Conv1D`` alike.
    """
    projs = attention_out_projs(model)
    n_layers, n_heads, dim = means.shape
    out = []
    for layer, proj in enumerate(projs):
        param = next(proj.parameters())
        blocks = torch.zeros(n_heads, n_heads * dim, dtype=param.dtype, device=param.device)
        for h in range(n_heads):
            blocks[h, h * dim:(h + 1) * dim] = means[layer, h]
        zero = proj(torch.zeros(1, n_heads * dim, dtype=param.dtype, device=param.device))
        out.append((proj(blocks) - zero).float().cpu())
    return torch.stack(out)


@dataclass
class FunctionVector:
    vector: torch.Tensor  # [d]
    heads: list[tuple[int, int]]  # (layer, head), by decreasing CIE

    def to_json(self) -> dict:
        return {"heads": [list(h) for h in self.heads], "norm": float(self.vector.norm())}


def function_vector(model, means: torch.Tensor, cie: np.ndarray, n_top: int) -> FunctionVector:
    """Sum of the mean outputs of the ``n_top`` heads with the largest CIE."""
    if not 1 <= n_top <= cie.size:
        raise TasksupError(f"the number of function-vector heads must be in [1, {cie.size}], got {n_top}")
    order = np.argsort(-cie, axis=None, kind="stable")[:n_top]
    heads = [tuple(int(i) for i in np.unravel_index(k, cie.shape)) for k in order]
    contributions = head_contributions(model, means)
    return FunctionVector(sum(contributions[layer, head] for layer, head in heads), heads)
