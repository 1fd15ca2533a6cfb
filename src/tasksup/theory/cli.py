"""``tasksup theory ...`` (mounted by the main CLI with ``app.add_typer(app, name="theory")``)."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import List, Optional

import typer
import yaml

app = typer.Typer(help="Theorem 1 as a runnable transformer: K tasks in superposition (Appendix D).",
                  no_args_is_help=True, pretty_exceptions_enable=False)

SETTINGS = {"k_values": list, "m_values": list, "d": int, "n": int, "trials": int, "seed": int,
            "min_separation": float, "constants": dict}


@app.callback()
def theory() -> None:
    """Theorem 1 as a runnable transformer: K tasks in superposition (Appendix D)."""


def read_config(path: Path) -> dict:
    """Verify settings from YAML (``configs/theory_verify.yaml``); unknown keys and bad types are errors."""
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"config file {str(path)!r} is not valid YAML: {str(e).splitlines()[0]}") from None
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ValueError(f"config file {str(path)!r} must hold a mapping of settings")
    for key, value in raw.items():
        if key not in SETTINGS:
            raise ValueError(f"{path}: unknown key {key!r} (known: {', '.join(SETTINGS)})")
        kind = SETTINGS[key]
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float else (
            isinstance(value, kind) and not isinstance(value, bool))
        if not ok:
            raise ValueError(f"{path}: {key} = {value!r} is not a {kind.__name__}")
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
    """Build both variants on random tasks, proportions and inputs; report weight/output errors and the size used."""
    from tasksup.theory.construction import Constants
    from tasksup.theory.verify import format_report
    from tasksup.theory.verify import verify as run_verify

    try:
        settings = read_config(config) if config is not None else {}
        given = {"seed": seed, "trials": trials, "k_values": k or None, "m_values": m or None, "d": d, "n": n,
                 "min_separation": min_separation}
        settings.update({key: value for key, value in given.items() if value is not None})
        raw_constants = dict(settings.pop("constants", {}))
        known = {f.name for f in fields(Constants)}
        unknown = sorted(set(raw_constants) - known)
        if unknown:
            raise ValueError(f"unknown constant {unknown[0]!r} (known: {', '.join(sorted(known))})")
        cli_constants = {"c_pos": c_pos, "c_avg": c_avg, "c_delta": c_delta, "tau": tau, "c_out": c_out, "c_big": c_big}
        raw_constants.update({key: value for key, value in cli_constants.items() if value is not None})
        report = run_verify(constants=Constants(**raw_constants), **settings)
    except ValueError as e:
        typer.echo(f"tasksup theory verify: error: {e}", err=True)
        raise typer.Exit(2) from None
    table = format_report(report)
    typer.echo(table)
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "verify.json").write_text(json.dumps(report, indent=2) + "\n")
        (output_dir / "verify.md").write_text("# `tasksup theory verify`\n\n" + table + "\n")
    if as_json:
        typer.echo(json.dumps(report))


if __name__ == "__main__":
    app()
