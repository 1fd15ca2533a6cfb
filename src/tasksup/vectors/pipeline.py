"""The first stage of every task-vector experiment: vectors of every layer, the layer curve, ℓ*.

For each task: v(ℓ) from ``n_prompts`` single-task prompts (App. C), the single-task ICL accuracy
of those prompts (the reference a patched query is compared with), and the patched accuracy of
``n_queries`` lone queries at every layer. ℓ* maximises the accuracy averaged over the tasks (the
paper picks one layer per task family, Table 1), unless the config fixes ``layer``.

Two ways to patch (``method``):

- ``task_vector`` (Hendel et al., the paper): *replace* the separator's hidden state at ℓ by v_t(ℓ).
- ``function_vector`` (Todd et al.): *add* the summed mean outputs of the ``fv_heads`` attention
  heads with the largest causal indirect effect (averaged over the tasks) at ℓ.

A query is correct when its answer is the most likely output, by ``accuracy`` (``exact`` top-1 or
``greedy``; :mod:`tasksup.vectors.select`). Before anything runs, :func:`tasksup.tasks.check_fits`
stops a config whose m does not fit the model's context, naming the largest m that does.

Results go to the run directory and are reused when the run resumes: ``vectors.safetensors``
(v_t for every layer, and the function vectors) and ``layers.json`` (the curves, ℓ*, settings).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from tasksup.errors import TasksupError
from tasksup.experiments import CommonConfig
from tasksup.tasks import PromptBuilder, check_fits, resolve_tasks
from tasksup.vectors.extract import last_token_states, lone_queries, task_prompts
from tasksup.vectors.function_vectors import (causal_indirect_effects, corrupted_text, function_vector,
                                              mean_head_activations)
from tasksup.vectors.hooks import decoder_layers
from tasksup.vectors.select import MAX_NODES, MEASURES, accuracy, layer_curve, output_budget, top1_outputs

METHODS = {"task_vector": "replace", "function_vector": "add"}
CORRUPT_STREAM = 13
VECTORS_FILE, LAYERS_FILE = "vectors.safetensors", "layers.json"
UNRELATED_KEYS = {"batch_size", "device", "title"}  # may change without invalidating stage 1


@dataclass
class VectorConfig(CommonConfig):
    """Settings shared by the task-vector experiments (paper App. C defaults)."""

    tasks: str | list[str] = "copy_add"  # a family or task names sharing one input space
    n_examples: int = 60  # m: examples per prompt (App. C: 60)
    n_prompts: int = 100  # prompts averaged into each task vector (App. C: 100)
    n_queries: int = 100  # lone queries per layer when selecting ℓ* (App. C: 100)
    layer: int | None = None  # None: ℓ* = argmax of the patched accuracy; Llama-3-8B: 14 (copy_add), 19 (translate)
    method: str = "task_vector"  # task_vector (replace, Hendel et al.) | function_vector (add, Todd et al.)
    fv_heads: int = 10  # function_vector: heads summed (Todd et al.: 10)
    fv_prompts: int = 25  # function_vector: corrupted prompts per task for the causal indirect effects
    accuracy: str = "exact"  # correct = the answer is the exact top-1 output | the greedy output (Hendel et al.)
    top1_max_tokens: int | None = None  # longest output considered (default: twice the longest answer's tokens)
    top1_max_nodes: int = MAX_NODES  # exact: search expansions per query before its greedy output decides
    delimiter: str = "\n"
    order: str = "random"  # random | blocked
    terminator: str | None = None  # appended to answers when scoring probabilities (paper: none)
    tokenization: str = "in_context"  # in_context | separate (see scoring.py)
    title: str = ""


def check(cfg: VectorConfig) -> None:
    tasks = resolve_tasks(cfg.tasks)
    PromptBuilder(tasks, cfg.delimiter)
    if cfg.method not in METHODS:
        raise TasksupError(f"method must be one of {', '.join(METHODS)}, got {cfg.method!r}")
    if cfg.accuracy not in MEASURES:
        raise TasksupError(f"accuracy must be one of {', '.join(MEASURES)}, got {cfg.accuracy!r}")
    for key in ("n_examples", "n_prompts", "n_queries", "fv_heads", "fv_prompts"):
        if getattr(cfg, key) < 1:
            raise TasksupError(f"{key} must be at least 1, got {getattr(cfg, key)}")
    if cfg.method == "function_vector" and cfg.fv_prompts > cfg.n_prompts:
        raise TasksupError(f"fv_prompts ({cfg.fv_prompts}) cannot exceed n_prompts ({cfg.n_prompts})")


@dataclass
class Prepared:
    """What stage 1 hands to an experiment."""

    tasks: list[str]
    layer: int  # ℓ*
    mode: str  # replace | add
    vectors: dict[str, torch.Tensor]  # task -> v(ℓ) for every layer, [n_layers, d]
    patch_vectors: dict[str, torch.Tensor]  # task -> what is patched at ℓ* ([d])
    report: dict = field(default_factory=dict)  # layers.json


def _settings(cfg) -> dict:
    from tasksup.config import to_dict

    return {k: v for k, v in to_dict(cfg).items() if k not in UNRELATED_KEYS}


def _read_report(path: Path, settings: dict) -> dict:
    if not path.is_file():
        return {"settings": settings, "per_task": {}}
    report = json.loads(path.read_text())
    if report.get("settings") != settings:
        raise TasksupError(f"{path.parent} holds task vectors of a different config; use another --out or delete it")
    return report


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)


def prepare(cfg: VectorConfig, lm, out_dir: Path, progress: bool = True, *, generate: int = 0,
            fix: str = "--set n_examples={m}") -> Prepared:
    """Stage 1 (resumable per task): task vectors, ICL accuracy, layer curves, ℓ*, function vectors.

    First, prompts of ``cfg.n_examples`` examples must fit the model's context with the longest
    output and ``generate`` more tokens (what the caller decodes afterwards); else an error naming
    the largest m that fits and ``fix`` (:func:`tasksup.tasks.check_fits`).
    """
    out_dir = Path(out_dir)
    tasks = resolve_tasks(cfg.tasks)
    n_layers = len(decoder_layers(lm.model))
    if cfg.layer is not None and not 0 <= cfg.layer < n_layers:
        raise TasksupError(f"layer {cfg.layer} is out of range: the model has {n_layers} decoder layers (0..{n_layers - 1})")
    prompts = {t.name: task_prompts(t, cfg.n_prompts, cfg.n_examples, cfg.seed, k, cfg.delimiter)
               for k, t in enumerate(tasks)}
    lone = {t.name: lone_queries(t, cfg.n_queries, cfg.seed, k) for k, t in enumerate(tasks)}
    budget = cfg.top1_max_tokens or output_budget(
        lm, [p.answers[0] for ps in prompts.values() for p in ps] + [a for qs in lone.values() for _, a in qs],
        cfg.delimiter)
    check_fits(lm, lambda k: ((p.text, p.answers) for j, t in enumerate(tasks)
                              for p in task_prompts(t, cfg.n_prompts, k, cfg.seed, j, cfg.delimiter)),
               cfg.n_examples, terminator=cfg.terminator, generate=max(budget, generate), fix=fix)
    report = _read_report(out_dir / LAYERS_FILE, _settings(cfg))
    vec_file = out_dir / VECTORS_FILE
    tensors = load_file(str(vec_file)) if vec_file.is_file() else {}
    for t in tqdm(tasks, desc="task vectors", disable=not progress):
        if t.name not in tensors:
            tensors[t.name] = last_token_states(lm, [p.text for p in prompts[t.name]]).mean(0)
            save_file(tensors, str(vec_file))
    vectors = {t.name: tensors[t.name] for t in tasks}

    if cfg.method == "function_vector":
        candidates = _function_vectors(cfg, lm, tasks, prompts, tensors, report, vec_file, progress)
    else:
        candidates = vectors
    mode = METHODS[cfg.method]
    for t in tasks:
        entry = report["per_task"].setdefault(t.name, {})
        if "icl_accuracy" not in entry:
            queries = [(p.text, p.answers[0]) for p in prompts[t.name]]
            found = top1_outputs(lm, queries, (), cfg.delimiter, budget, cfg.accuracy, cfg.top1_max_nodes)
            entry.update(icl_accuracy=accuracy(found, queries), icl_undecided=found.undecided)
            _write_json(out_dir / LAYERS_FILE, report)
        if cfg.layer is None and "layer_accuracy" not in entry:
            curve = layer_curve(lm, candidates[t.name], lone[t.name], mode=mode, stop=cfg.delimiter, max_tokens=budget,
                                measure=cfg.accuracy, max_nodes=cfg.top1_max_nodes, progress=progress)
            entry.update(curve.to_json())
            _write_json(out_dir / LAYERS_FILE, report)
    if cfg.layer is None:
        mean_curve = np.mean([report["per_task"][t.name]["layer_accuracy"] for t in tasks], axis=0)
        report["mean_layer_accuracy"] = mean_curve.tolist()
        layer = int(np.argmax(mean_curve))
    else:
        layer = cfg.layer
    report.update({"n_layers": n_layers, "layer": layer, "selected": cfg.layer is None, "method": cfg.method,
                   "mode": mode, "accuracy": cfg.accuracy, "max_tokens": budget})
    _write_json(out_dir / LAYERS_FILE, report)
    patch = {name: (v[layer] if v.ndim == 2 else v) for name, v in candidates.items()}
    return Prepared([t.name for t in tasks], layer, mode, vectors, patch, report)


def _function_vectors(cfg, lm, tasks, prompts, tensors, report, vec_file, progress) -> dict[str, torch.Tensor]:
    """Todd et al.: mean head activations, causal indirect effects on corrupted prompts, the top heads' sum."""
    space = tasks[0].inputs
    cies = []
    for k, t in enumerate(tasks):
        key_means, key_cie = f"heads.{t.name}", f"cie.{t.name}"
        if key_means not in tensors:
            tensors[key_means] = mean_head_activations(lm, [p.text for p in prompts[t.name]])
            save_file(tensors, str(vec_file))
        if key_cie not in tensors:
            chosen = prompts[t.name][:cfg.fv_prompts]
            corrupted = [corrupted_text(p, space.separator, cfg.delimiter,
                                        np.random.default_rng([cfg.seed, CORRUPT_STREAM, k, i]))
                         for i, p in enumerate(chosen)]
            cie = causal_indirect_effects(lm, tensors[key_means], corrupted, [p.answers[0] for p in chosen],
                                          cfg.terminator, progress)
            tensors[key_cie] = torch.tensor(cie, dtype=torch.float32)
            save_file(tensors, str(vec_file))
        cies.append(tensors[key_cie].numpy())
    mean_cie = np.mean(cies, axis=0)
    n_heads = min(cfg.fv_heads, mean_cie.size)
    out = {}
    for t in tasks:
        fv = function_vector(lm.model, tensors[f"heads.{t.name}"], mean_cie, n_heads)
        out[t.name] = fv.vector
        report["per_task"].setdefault(t.name, {})["function_vector_norm"] = float(fv.vector.norm())
        report["function_vector_heads"] = [list(h) for h in fv.heads]
    report["mean_cie"] = mean_cie.tolist()
    return out
