"""`tasksup decode`: one prompt, every task's answer, with the implied task mixture and the cost."""

from __future__ import annotations

import codecs
import dataclasses
import json
import time
from pathlib import Path
from typing import List, Optional

import typer

from tasksup.config import check_options, read_text
from tasksup.errors import TasksupError

NEGLIGIBLE = 1e-6  # the task answers together below this: the model does not do the tasks, and shares mean nothing


def read_prompt(path: Path) -> str:
    """The prompt file's text; one trailing newline (the one editors add) is dropped."""
    text = read_text(path, "prompt file")
    text = text[:-1] if text.endswith("\n") else text
    if not text.strip():
        raise TasksupError(f"prompt file {str(path)!r} is empty")
    return text


def parse_tasks(spec: str | None):
    """``add_translate`` (a family or one task) or ``to_de,to_fr`` (task names)."""
    if spec is None:
        return None
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise TasksupError("--tasks is empty")
    return names[0] if len(names) == 1 else names


def decode_command(
    model: str = typer.Option(..., "--model", help="HF model directory or hub id."),
    prompt_file: Path = typer.Option(..., "--prompt-file", help="The prompt (examples, then the query on the last line)."),
    k: int = typer.Option(6, "--k", help="How many of the most probable complete outputs."),
    tasks: Optional[str] = typer.Option(None, "--tasks", help="A family (add_translate) or task names (to_de,to_fr) "
                                        "to attribute outputs to; the query is read from the prompt's last line."),
    task_file: Optional[List[Path]] = typer.Option(None, "--task-file", help="YAML file declaring extra tasks."),
    stop: str = typer.Option("\\n", "--stop", help="Ends an output and separates the examples (escapes allowed)."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Longest output in tokens (default 32, "
                                             "or what the context leaves)."),
    dtype: str = typer.Option("float32", "--dtype", help="float32 | bfloat16 | float16"),
    device: Optional[str] = typer.Option(None, "--device", help="Default: cuda when available, else cpu."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object as the last line."),
):
    """The k most probable complete outputs of one prompt (exact), the task each answers, the task mixture.

    \b
    Example: tasksup decode --model checkpoints/translate-small --prompt-file configs/prompts/translate.txt --tasks translate
    """
    from tasksup.tasks import load_task_file

    check_options(k=k, max_tokens=max_tokens, dtype=dtype)
    try:
        stop = codecs.decode(stop, "unicode_escape")
    except UnicodeDecodeError:
        raise TasksupError(f"--stop {stop!r} has an invalid escape sequence") from None
    if not stop:
        raise TasksupError("--stop must not be empty")
    for f in task_file or []:
        load_task_file(f)
    prompt = read_prompt(prompt_file)
    spec = parse_tasks(tasks)

    from tasksup.decoding import decode, query_line, task_mixture
    from tasksup.models import load_model

    lm = load_model(model, dtype=dtype, device=device)
    start = time.perf_counter()
    decoded, answers, found = decode(lm, prompt, k, stop, max_tokens, spec)
    wall = time.perf_counter() - start
    mixture = task_mixture(lm, prompt, answers, stop) if answers else []
    rank = {d.output: i + 1 for i, d in enumerate(decoded)}
    report = {
        "query": query_line(prompt, stop) if answers else None,
        "outputs": [d._asdict() for d in decoded],
        "tasks": [{**m._asdict(), "rank": rank.get(m.answer)} for m in mixture],
        "cost": {"prompt_tokens": found.prompt_tokens, "forward_tokens": found.forward_tokens,
                 "expansions": found.expansions, "wall_s": wall},
    }
    echo_report(report, k)
    if as_json:
        typer.echo(json.dumps(report, ensure_ascii=False))


def echo_report(report: dict, k: int) -> None:
    if report["query"] is not None:
        typer.echo(f"query {report['query']!r}")
    typer.echo(f"{'#':>3}  {'probability':>11}  {'task':<14} output")
    for i, d in enumerate(report["outputs"], 1):
        typer.echo(f"{i:>3}  {d['probability']:>11.4g}  {d['task'] or '-':<14} {d['output']!r}")
    if report["tasks"]:
        total = sum(t["probability"] for t in report["tasks"])
        if total < NEGLIGIBLE:
            typer.echo(f"task mixture: none (the task answers hold {total:.2g} of the probability together: the model "
                       "does not do these tasks on this prompt, so their shares would mean nothing):")
        else:
            typer.echo("task mixture (Eq. 3 of each complete answer; share = normalised over the tasks):")
        for t in report["tasks"]:
            where = f"#{t['rank']}" if t["rank"] else f"not in the top {k}"
            share = f"{t['share']:>7.4f}" if total >= NEGLIGIBLE else f"{'-':>7}"
            typer.echo(f"    {t['task']:<14} {share}   P={t['probability']:<10.4g}  {where:<16} {t['answer']!r}")
        found = [t for t in report["tasks"] if t["rank"]]
        mass = sum(t["probability"] for t in found)
        typer.echo(f"the top {k} hold {len(found)} of {len(report['tasks'])} task answers ({mass:.4f} of the probability)")
    c = report["cost"]
    typer.echo(f"cost: prompt {c['prompt_tokens']} tokens (one pass), then {c['forward_tokens']} forward token-steps "
               f"over {c['expansions']} expansions; {c['wall_s']:.3f} s")


def bench_decode_command(
    model: str = typer.Option(..., "--model", help="HF model directory or hub id."),
    tasks: str = typer.Option("translate", "--tasks", help="A family or comma-separated task names."),
    n_examples: int = typer.Option(60, "--n-examples", help="m examples per prompt (paper: 20 per task)."),
    n_prompts: int = typer.Option(20, "--n-prompts"),
    k: Optional[int] = typer.Option(None, "--k", help="Outputs asked of each method (default K)."),
    max_tokens: int = typer.Option(32, "--max-tokens"),
    max_samples: int = typer.Option(200, "--max-samples", help="Sampling gives up after this many samples."),
    seed: int = typer.Option(0, "--seed"),
    out: Optional[Path] = typer.Option(None, "--out", help="Results directory: results.jsonl (one record per "
                                       "prompt), summary.json/csv; a rerun resumes (default "
                                       "results/bench_decode/<model>)."),
    dtype: str = typer.Option("float32", "--dtype", help="float32 | bfloat16 | float16"),
    device: Optional[str] = typer.Option(None, "--device", help="Default: cuda when available, else cpu."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON object on the last line."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
):
    """Task answers recovered and cost: best-first vs K greedy single-task decodes vs sampling vs Superposed Decoding.

    \b
    Example: tasksup bench decode --model checkpoints/plus-small --tasks plus0,plus1,plus2 --n-examples 9 --n-prompts 5
    """
    check_options(n_examples=n_examples, n_prompts=n_prompts, k=k, max_tokens=max_tokens, max_samples=max_samples,
                  seed=seed, dtype=dtype)
    from tasksup.decoding.bench import BenchSettings, format_table, run_bench  # torch
    from tasksup.models import load_model
    from tasksup.results import RunDir
    from tasksup.runner import model_slug

    settings = BenchSettings(parse_tasks(tasks), n_examples, n_prompts, k, "\n", max_tokens, max_samples, seed)
    settings.check()  # before loading the model
    lm = load_model(model, dtype=dtype, device=device)
    config = {"model": model, "dtype": dtype, **dataclasses.asdict(settings)}
    run_dir = RunDir(out or Path("results") / "bench_decode" / model_slug(model), config, seed=seed,
                     model=lm.identity())
    summary = run_bench(lm, settings, run_dir, progress=progress)
    typer.echo(format_table(summary))
    typer.echo(f"results in {run_dir.path}")
    if as_json:
        typer.echo(json.dumps(summary, ensure_ascii=False))
