"""`tasksup ...`: the command line."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from tasksup.cliutil import App

app = App(help="Task superposition in language models (paper: 'Everything Everywhere All at Once').")


@app.command()
def run(
    config: Path = typer.Argument(..., help="An experiment config (configs/*.yaml)."),
    extra_models: Optional[List[str]] = typer.Argument(None, help="More models after --models.", show_default=False),
    model: Optional[str] = typer.Option(None, "--model", help="HF directory or hub id (overrides the config)."),
    models: Optional[str] = typer.Option(None, "--models", help="Several models (experiments that compare models)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Results directory (default results/<config>/<model>)."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a config value: key=value (repeatable)."),
    progress: bool = typer.Option(True, help="Show progress bars."),
):
    """Run an experiment config; re-running the same command resumes where it stopped."""
    from tasksup.errors import TasksupError
    from tasksup.runner import run_config

    if extra_models and models is None:
        raise TasksupError(f"unexpected arguments {extra_models}; several models go after --models")
    all_models = ([models] + list(extra_models or [])) if models is not None else None
    if all_models is not None:
        if model is not None:
            raise TasksupError("give either --model or --models, not both")
        if len(all_models) > 1:
            raise TasksupError("this experiment takes one model; use --model")
        model = all_models[0]
    run_dir = run_config(config, model=model, out=out, overrides=set_, progress=progress)
    typer.echo(f"results in {run_dir.path}")


@app.command()
def tasks(file: Optional[List[Path]] = typer.Option(None, "--file", help="Also load tasks declared in a YAML file.")):
    """List every registered task family and task with one example each."""
    import numpy as np

    from tasksup.tasks import PromptBuilder, all_families, all_tasks, load_task_file

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


def _example_line(task) -> str:
    import numpy as np

    from tasksup.tasks import PromptBuilder

    x = task.inputs.sample(np.random.default_rng(7))
    return f"{task.name:<18} {PromptBuilder([task]).example(task, x)!r:<44} {task.description}"


def main() -> None:
    app()


if __name__ == "__main__":
    main()
