"""`tasksup ...`: the command line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer

from tasksup import cliutil
from tasksup.cliutil import App
from tasksup.decoding.command import bench_decode_command, decode_command
from tasksup.logs import VERBOSE_ENV
from tasksup.theory_cli import app as theory_app
from tasksup.vectors.cli import app as vectors_app

app = App(help="Task superposition in language models (paper: 'Everything Everywhere All at Once').")
app.add_typer(theory_app, name="theory", help="Theorem 1 as a runnable transformer (§5, App. D).")
app.add_typer(vectors_app, name="vectors", help="Task vectors (§6, App. C): `layers` finds the layer to patch; "
              "Figures 4-5 are `tasksup run configs/fig4_*.yaml` / `fig5_*.yaml`.")


def _version(show: bool) -> None:
    if show:
        from importlib.metadata import version

        typer.echo(f"tasksup {version('tasksup')}")
        raise typer.Exit()


@app.callback()
def options(verbose: bool = typer.Option(False, "--verbose", help="Show third-party warnings, logs and progress "
                                         f"bars (also {VERBOSE_ENV}=1)."),
            show_version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                              help="Print the version and exit.")) -> None:
    """Task superposition in language models (paper: 'Everything Everywhere All at Once')."""
    if verbose:
        os.environ[VERBOSE_ENV] = "1"


@app.command()
def run(
    config: Path = typer.Argument(..., help="An experiment config (configs/*.yaml)."),
    extra_models: Optional[List[str]] = typer.Argument(None, help="More models after --models.", show_default=False),
    model: Optional[str] = typer.Option(None, "--model", help="HF directory or hub id, or openai:NAME (overrides the config)."),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="Server of an openai:NAME model, e.g. http://127.0.0.1:8000/v1."),
    models: Optional[str] = typer.Option(None, "--models", help="Several models (experiments that compare models)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Results directory (default results/<config>/<model>; a model family: results/<config>)."),
    set_: Optional[List[str]] = typer.Option(None, "--set", metavar="KEY=VALUE",
                                                help="Override a config value (repeatable)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="float32 | bfloat16 | float16 (default: the config's)."),
    device: Optional[str] = typer.Option(None, "--device", help="Default: cuda when available, else cpu."),
    progress: bool = typer.Option(True, help="Show progress bars."),
):
    """Run an experiment config; re-running the same command resumes where it stopped.

    \b
    Example: tasksup run configs/fig3_ret.yaml --set n_prompts=10 --out runs/fig3_ret_10
    """
    from tasksup.errors import TasksupError
    from tasksup.runner import headline, run_config

    if extra_models and models is None:
        raise TasksupError(f"unexpected arguments {extra_models}; several models go after --models")
    all_models = ([models] + list(extra_models or [])) if models is not None else None
    if all_models is not None and model is not None:
        raise TasksupError("give either --model or --models, not both")
    set_ = list(set_ or []) + [f"{k}={v}" for k, v in (("dtype", dtype), ("device", device)) if v is not None]
    run_dir = run_config(config, model=model, models=all_models, out=out, overrides=set_, progress=progress,
                         base_url=base_url)
    typer.echo("; ".join(filter(None, [headline(run_dir.path), f"results in {run_dir.path}"])))


@app.command()
def summarize(
    paths: List[Path] = typer.Argument(..., help="Results folders (each with config.json and results.jsonl), or "
                                                 "folders above them: every results folder below is done."),
):
    """Rewrite the summary and figures of finished runs from their results.jsonl: no model, nothing scored.

    \b
    Example: tasksup summarize results/fig3_ret
    """
    from tasksup.errors import TasksupError
    from tasksup.runner import result_folders, resummarize

    folders = result_folders(paths, families=True)
    skipped = []
    for folder in folders:
        try:
            figures = resummarize(folder)
        except TasksupError as e:
            skipped.append(folder)
            typer.echo(f"skipped: {e}")
            continue
        typer.echo(f"summarized {folder}" + (f" (figure: {figures[0]})" if figures else ""))
    if len(skipped) == len(folders):
        raise TasksupError(f"nothing summarized ({len(skipped)} folder(s) skipped)")


@app.command()
def pack(
    paths: List[Path] = typer.Argument(..., help="Results folders, or folders above them: every results folder "
                                                 "below is done."),
):
    """Gzip each folder's results.jsonl into results.jsonl.gz (about a fifth of the bytes), e.g. before committing
    results. Every command reads either file; a run that grows again unpacks it first.

    \b
    Example: tasksup pack results/fig3_ret
    """
    from tasksup.results import RECORDS, pack as pack_folder
    from tasksup.runner import result_folders

    before = after = 0
    for folder in result_folders(paths):
        if (folder / RECORDS).is_file():
            b, a = pack_folder(folder)
            before, after = before + b, after + a
            typer.echo(f"packed {folder}: {b:,} -> {a:,} bytes")
    typer.echo(f"{before:,} -> {after:,} bytes in all")


@app.command()
def refingerprint(
    paths: List[Path] = typer.Argument(..., help="Results folders, or folders above them: every results folder "
                                                 "below is done."),
):
    """Verify results folders whose run.json holds an older model fingerprint against the checkpoint each names,
    and upgrade them, so that they accept new rows again.

    \b
    Example: tasksup refingerprint results/fig3_ret
    """
    from tasksup.errors import TasksupError
    from tasksup.runner import refingerprint as verify, result_folders

    folders, loaded, failed = result_folders(paths), {}, 0
    for folder in folders:
        try:
            typer.echo(f"{verify(folder, loaded)}: {folder}")
        except TasksupError as e:
            failed += 1
            typer.echo(f"not verified: {e}")
    if failed:
        raise TasksupError(f"{failed} of {len(folders)} folder(s) not verified (they accept no new rows)")


@app.command()
def train(
    config: Path = typer.Argument(..., help="A training config (configs/train_*.yaml; keys in docs/training.md)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output directory (default runs/<config name>)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run saved in --out."),
    set_: Optional[List[str]] = typer.Option(None, "--set", metavar="KEY=VALUE",
                                                help="Override a config value (repeatable)."),
    stop_after: Optional[int] = typer.Option(None, "--stop-after", help="Save and stop at this step (--resume continues)."),
    finish: bool = typer.Option(False, "--finish", help="Where --stop-after stops, also write the final evaluation, "
                                "curves and train_summary.json (the run stays resumable)."),
    progress: bool = typer.Option(True, help="Show progress bars."),
):
    """Train a GPT-2 from scratch: one task per sequence (paper §4, Eq. 1), or a mixed corpus with mix_share; works
    under `accelerate launch`.

    \b
    Example: tasksup train configs/train_numeric6_mixed_xs.yaml --out runs/numeric6-mixed-xs
    """
    from tasksup.config import check_options

    check_options(stop_after=stop_after)
    from tasksup.train import load_train_config  # torch, transformers, accelerate
    from tasksup.train import train as run_training

    cfg = load_train_config(config, set_)
    path = run_training(cfg, out or Path("runs") / config.stem, resume=resume, stop_after=stop_after, finish=finish,
                        progress=progress)
    typer.echo(f"model in {path}")


@app.command(name="train-curves")
def train_curves(
    runs: List[Path] = typer.Argument(..., help="Training output folders (with metrics.jsonl)."),
    out: Path = typer.Option(..., "--out", help="Figure path without suffix (writes .png and .pdf)."),
    title: str = typer.Option("", "--title"),
):
    """Loss and per-task accuracy curves of training runs side by side; the step each plateau broke.

    \b
    Example: tasksup train-curves checkpoints/numeric6-mixed-s checkpoints/numeric6-mixed-m
    """
    import json

    from tasksup.train.curves import plot_curves, read_curves

    curves = [read_curves(r) for r in runs]
    for c in curves:
        typer.echo(json.dumps(c.summary()))
    for path in plot_curves(curves, out, title):
        typer.echo(f"figure: {path}")


@app.command()
def tasks(file: Optional[List[Path]] = typer.Option(None, "--file", help="Also load tasks declared in a YAML file.")):
    """List every registered task family and task with one example each.

    \b
    Example: tasksup tasks --file my_tasks.yaml
    """
    from tasksup.tasks import all_families, all_tasks, load_task_file

    for f in file or []:
        load_task_file(f)
    listed = set()
    for fam in all_families().values():
        typer.echo(f"{fam.name} (K={len(fam.tasks)}): {fam.description}")
        for name in fam.tasks:
            listed.add(name)
            typer.echo("    " + _example_line(all_tasks()[name]))
    rest = [t for n, t in all_tasks().items() if n not in listed]
    if rest:
        typer.echo("tasks outside a family:")
        for t in rest:
            typer.echo("    " + _example_line(t))


app.command(name="decode")(decode_command)


def _example_line(task) -> str:
    import numpy as np

    from tasksup.errors import TasksupError
    from tasksup.tasks import PromptBuilder

    x = task.inputs.sample(np.random.default_rng(7))
    try:
        example = repr(PromptBuilder([task]).example(task, x))
    except TasksupError as e:  # one broken user task must not hide the others
        example = f"<error: {e}>"
    return f"{task.name:<18} {example:<44} {task.description}"


bench_app = App(help="Benchmarks: ours against the paper's released method, same model, same run.")
app.add_typer(bench_app, name="bench")


@bench_app.command("scoring")
def bench_scoring(
    json_out: bool = typer.Option(False, "--json", help="Also print one JSON object as the last line."),
    model: Optional[str] = typer.Option(None, "--model", help="Benchmark this causal LM as is (default: random GPT-2)."),
    layers: int = typer.Option(6, help="Layers of the random GPT-2."),
    width: int = typer.Option(256, help="Width of the random GPT-2."),
    vocab: str = typer.Option("gpt2", help="Vocabulary of the random GPT-2: gpt2 (real, cached) | char."),
    prompt_tokens: int = typer.Option(750, help="Approximate prompt length in tokens."),
    prompts: int = typer.Option(3, help="Prompts per K."),
    repeats: int = typer.Option(5, help="Timed repeats per prompt (median); 4x as many for ours / bare."),
    device: Optional[str] = typer.Option(None, "--device", help="Default: cuda when available, else cpu."),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads (default: a row at 1 and one at torch's "
                                          "default, the machine's cores)."),
):
    """Exact scoring (K=4, K=6) and top-k search vs the released code's method: time ratios, peak memory.

    \b
    Example: tasksup bench scoring --json --threads 1
    """
    from tasksup.config import check_options

    check_options(layers=layers, width=width, prompt_tokens=prompt_tokens, prompts=prompts, repeats=repeats,
                  threads=threads)
    from tasksup.bench import BenchSetup, scoring_command  # torch

    scoring_command(json_out, BenchSetup(model=model, layers=layers, width=width, vocab=vocab,
                                         prompt_tokens=prompt_tokens, n_prompts=prompts, repeats=repeats, device=device,
                                         threads=threads))


bench_app.command("decode")(bench_decode_command)


def main() -> None:
    cliutil.main(app)


if __name__ == "__main__":
    main()
