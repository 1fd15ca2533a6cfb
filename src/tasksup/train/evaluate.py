"""Single-task ICL accuracy: on held-out prompts of one task, is the model's answer the task's answer?

Two ways to read "the model's answer":

- ``greedy_accuracy`` (used during training, one forward pass per batch): every answer token and
  the delimiter after it is the argmax given the correct prefix -- exactly "greedy decoding
  outputs the answer". Greedy is only an approximation of the most probable complete output.
- ``exact_accuracy`` (the reported numbers): the exact most probable complete output
  (``LanguageModel.top_outputs(prompt, k=1, stop=delimiter)``, a best-first search over outputs of
  up to twice the longest answer's tokens) equals the answer.
"""

from __future__ import annotations

import numpy as np
import torch

from tasksup.train.data import SequenceSource, collate


@torch.no_grad()
def greedy_accuracy(model, source: SequenceSource, m: int, n: int, batch_size: int = 32) -> dict[str, float]:
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = {}
    for k, task in enumerate(source.tasks):
        rows = source.eval_rows(k, n, m)
        correct = 0
        for start in range(0, n, batch_size):
            ids, tgt = collate(rows[start:start + batch_size], source.pad_id)  # right-padded: no mask needed
            pred = model(input_ids=ids.to(device)).logits[:, :-1].argmax(-1).cpu()
            correct += int(((pred == ids[:, 1:]) | ~tgt[:, 1:]).all(-1).sum())
        out[task.name] = correct / n
    model.train(was_training)
    return out


def exact_accuracy(lm, source: SequenceSource, m: int, n: int, progress=None) -> dict[str, float]:
    delimiter = source.delimiter
    out = {}
    for k, task in enumerate(source.tasks):
        prompts = [source.eval_prompt(k, i, m) for i in range(n)]
        longest = max(len(lm.encode_bare(p.answers[0] + delimiter)) for p in prompts)
        tops = [lm.top_outputs(p.text, k=1, stop=delimiter, max_tokens=2 * longest) for p in prompts]
        hits = [bool(top) and top[0][0] == p.answers[0] for top, p in zip(tops, prompts)]
        out[task.name] = float(np.mean(hits))
        if progress is not None:
            progress.update(1)
    return out
