"""``tasksup vectors ...`` (mounted by the main CLI with ``app.add_typer(app, name="vectors")``)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Optional

import typer

from tasksup.cliutil import App

app = App(help="Task vectors (§6, App. C): `layers` finds the layer to patch; Figures 4-5 are "
              "`tasksup run configs/fig4_*.yaml` / `fig5_*.yaml`.")


@app.callback()
def vectors() -> None:
    """Task vectors (§6, App. C): layer selection by patched lone-query accuracy."""


@app.command()
def layers(
    model: str = typer.Option(..., "--model", help="HF directory or hub id."),
    task: str = typer.Option(..., "--task", help="A task (e.g. copy_op1) or a family (accuracy averaged over its tasks)."),
    n_prompts: int = typer.Option(100, "--n-prompts", help="Prompts averaged into each task vector (App. C: 100)."),
    n_examples: int = typer.Option(60, "--n-examples", help="Examples per prompt, m (App. C: 60)."),
    n_queries: int = typer.Option(100, "--n-queries", help="Lone queries per layer (App. C: 100)."),
    method: str = typer.Option("task_vector", "--method", help="task_vector (replace) | function_vector (add)."),
    fv_heads: int = typer.Option(10, "--fv-heads", help="function_vector: heads summed."),
    fv_prompts: int = typer.Option(25, "--fv-prompts", help="function_vector: corrupted prompts per task."),
    accuracy: str = typer.Option("exact", "--accuracy", help="A query is correct when its answer is the exact top-1 "
                                 "output (exact) or the greedy output (greedy, Hendel et al.)."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Longest output considered, in tokens "
                                             "(default: twice the longest answer's)."),
    max_nodes: int = typer.Option(256, "--max-nodes", help="exact: search expansions per query before its greedy "
                                  "output decides (counted as undecided)."),
    seed: int = typer.Option(0, "--seed"),
    dtype: str = typer.Option("float32", "--dtype", help="float32 | bfloat16 | float16"),
    device: Optional[str] = typer.Option(None, "--device", help="Default: cuda when available, else cpu."),
    batch_size: int = typer.Option(8, "--batch-size"),
    out: Optional[Path] = typer.Option(None, "--out", help="Keep vectors.safetensors and layers.json here (resumable)."),
    as_json: bool = typer.Option(False, "--json", help="Print only one JSON object: layer_accuracy, best_layer, ..."),
    progress: bool = typer.Option(True, help="Show progress bars."),
):
    """Patched lone-query accuracy of the task vector of every layer; the best layer ℓ*.

    \b
    Example: tasksup vectors layers --model checkpoints/copy_add-small --task copy_add --n-examples 12
    """
    from tasksup.models import load_model
    from tasksup.vectors import pipeline

    cfg = pipeline.VectorConfig(tasks=task, model=model, n_prompts=n_prompts, n_examples=n_examples,
                                n_queries=n_queries, method=method, fv_heads=fv_heads, fv_prompts=fv_prompts,
                                accuracy=accuracy, top1_max_tokens=max_tokens, top1_max_nodes=max_nodes, seed=seed,
                                dtype=dtype, device=device, batch_size=batch_size)
    pipeline.check(cfg)
    lm = load_model(model, dtype=dtype, device=device, batch_size=batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = out or Path(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        report = pipeline.prepare(cfg, lm, out_dir, progress, fix="--n-examples {m}").report
    per_task = report["per_task"]
    undecided = sum(e["undecided"] + e["icl_undecided"] for e in per_task.values())
    if as_json:  # JSON only on stdout
        typer.echo(json.dumps({"layer_accuracy": report["mean_layer_accuracy"], "best_layer": report["layer"],
                               "method": method, "accuracy": accuracy, "undecided": undecided, "per_task": per_task}))
        return
    typer.echo(f"{'layer':>5}  " + "  ".join(f"{t:>12}" for t in per_task) + f"  {'mean':>6}")
    for layer, mean in enumerate(report["mean_layer_accuracy"]):
        cells = "  ".join(f"{per_task[t]['layer_accuracy'][layer]:>12.3f}" for t in per_task)
        typer.echo(f"{layer:>5}  {cells}  {mean:>6.3f}" + ("  <- best" if layer == report["layer"] else ""))
    for t, e in per_task.items():
        typer.echo(f"{t}: ICL accuracy {e['icl_accuracy']:.3f} (m={n_examples}), lone query without a patch "
                   f"{e['baseline_accuracy']:.3f}")
    note = f"; {undecided} undecided after --max-nodes {max_nodes} (greedy output used)" if undecided else ""
    typer.echo(f"accuracy: {accuracy} (outputs up to {report['max_tokens']} tokens){note}")
