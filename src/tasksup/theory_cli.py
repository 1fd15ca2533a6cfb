"""``tasksup theory ...`` (mounted by the main CLI with ``app.add_typer(app, name="theory")``).

It lives outside :mod:`tasksup.theory`, whose modules import torch: the CLI loads no heavy library
before it has checked its input.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import List, Optional

import typer

from tasksup.cliutil import App, main
from tasksup.config import check_options, check_settings, read_yaml
from tasksup.errors import TasksupError

app = App(help="Theorem 1 as a runnable transformer: K tasks in superposition (Appendix D).")

SETTINGS = {"k_values": list[int], "m_values": list[int], "d": int, "n": int, "trials": int, "seed": int,
            "min_separation": float, "constants": dict}


@app.callback()
def theory() -> None:
    """Theorem 1 as a runnable transformer: K tasks in superposition (Appendix D)."""


def read_config(path: Path) -> dict:
    """Verify settings from YAML (``configs/theory_verify.yaml``); unknown keys, bad types and ranges are errors."""
    raw = read_yaml(path)
    check_settings(raw, SETTINGS, source=Path(path).name)
    return raw


@app.command()
def verify(
    config: Optional[Path] = typer.Option(None, "--config", help="YAML settings (e.g. configs/theory_verify.yaml); options below override it."),
    seed: Optional[int] = typer.Option(None, help="Seed of every random draw.  [default: 0]"),
    trials: Optional[int] = typer.Option(None, help="Random draws per (K, m).  [default: 4]"),
    k: Optional[List[int]] = typer.Option(None, "--k", help="Numbers of tasks K (repeatable).  [default: 2 3 4]"),
    m: Optional[List[int]] = typer.Option(None, "--m", help="Numbers of examples m (repeatable).  [default: 1 4 16 64]"),
    d: Optional[int] = typer.Option(None, help="Token dimension.  [default: 4]"),
    n: Optional[int] = typer.Option(None, help="Example length (x_1..x_{n-2}, '=', y).  [default: 6]"),
    min_separation: Optional[float] = typer.Option(None, help="L1 margin by which other tasks must miss each label.  [default: 0.1]"),
    c_pos: Optional[float] = typer.Option(None, help="Eq. 9's C (shift heads).  [default: 15]"),
    c_avg: Optional[float] = typer.Option(None, help="Eq. 26's C (averaging head).  [default: 30]"),
    c_delta: Optional[float] = typer.Option(None, help="Eq. 24's C (indicator slope).  [default: 100]"),
    tau: Optional[float] = typer.Option(None, help="Indicator dead zone; 0 is eq. 24 verbatim.  [default: 0.01]"),
    c_out: Optional[float] = typer.Option(None, help="Eq. 31's C (weighting heads) and the exact logit clamp.  [default: 30]"),
    c_big: Optional[float] = typer.Option(None, help="Eq. 21's C and eq. 32's gate bound.  [default: 100]"),
    as_json: bool = typer.Option(False, "--json", help="End with the report as one JSON line."),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", help="Also write verify.json and verify.md here."),
) -> None:
    """Build both variants on random tasks, proportions and inputs; report weight/output errors and the size used.

    \b
    Example: tasksup theory verify --config configs/theory_verify.yaml
    """
    check_options(seed=seed, trials=trials, k=k, m=m, d=d, n=n, min_separation=min_separation)
    if output_dir is not None and output_dir.exists() and not output_dir.is_dir():
        raise TasksupError(f"--output-dir {str(output_dir)!r} is a file, not a directory")
    settings = read_config(config) if config is not None else {}
    given = {"seed": seed, "trials": trials, "k_values": k or None, "m_values": m or None, "d": d, "n": n,
             "min_separation": min_separation}
    settings.update({key: value for key, value in given.items() if value is not None})

    from tasksup.theory.construction import Constants
    from tasksup.theory.verify import format_report
    from tasksup.theory.verify import verify as run_verify

    raw_constants = dict(settings.pop("constants", {}))
    known = {f.name for f in fields(Constants)}
    unknown = sorted(set(raw_constants) - known, key=str)
    if unknown:
        raise TasksupError(f"unknown constant {unknown[0]!r} (known: {', '.join(sorted(known))})")
    cli_constants = {"c_pos": c_pos, "c_avg": c_avg, "c_delta": c_delta, "tau": tau, "c_out": c_out, "c_big": c_big}
    raw_constants.update({key: value for key, value in cli_constants.items() if value is not None})
    try:
        report = run_verify(constants=Constants(**raw_constants), **settings)
    except ValueError as e:  # the construction's own checks: constants, n >= 3, separation vs tau ...
        raise TasksupError(str(e)) from None
    table = format_report(report)
    typer.echo(table)
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "verify.json").write_text(json.dumps(report, indent=2) + "\n")
        (output_dir / "verify.md").write_text("# `tasksup theory verify`\n\n" + table + "\n")
    if as_json:
        typer.echo(json.dumps(report))


if __name__ == "__main__":
    main(app)
