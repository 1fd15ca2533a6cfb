"""`tasksup theory verify` (the Typer app in tasksup.theory_cli)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from tasksup.theory_cli import app

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "theory_verify.yaml"
KEYS = {"max_weight_error_exact", "max_weight_error_sigmoid", "max_output_error_exact", "layers",
        "heads_per_layer", "width"}


def invoke(*args):
    return CliRunner().invoke(app, ["verify", *args])


def test_json_last_line_has_the_required_keys():
    result = invoke("--trials", "1", "--k", "2", "--k", "3", "--m", "16", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert KEYS <= set(report)
    assert report["max_weight_error_exact"] <= 0.02
    assert 0.0 < report["max_weight_error_sigmoid"] <= 0.27
    assert report["layers"] == 7 and report["heads_per_layer"] == {"2": 2, "3": 3}
    assert report["width"] == max(r["width"] for r in report["configs"])
    assert [(r["K"], r["m"]) for r in report["configs"]] == [(2, 16), (3, 16)]


def test_config_file_with_overrides(tmp_path):
    result = invoke("--config", str(CONFIG), "--trials", "1", "--m", "4", "--tau", "0.02", "--json",
                    "--output-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["settings"]["k_values"] == [2, 3, 4]          # from the file
    assert report["settings"]["m_values"] == [4]                # from the command line
    assert report["settings"]["constants"]["tau"] == 0.02
    assert report["settings"]["constants"]["c_delta"] == 100.0
    assert json.loads((tmp_path / "verify.json").read_text()) == report
    assert "| K | m |" in (tmp_path / "verify.md").read_text()


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("k_values: [2]\nwidth: 3\n")
    for args in (["--k", "0"], ["--m", "0"], ["--trials", "0"], ["--c-pos", "-1"], ["--n", "2"],
                 ["--config", str(bad)], ["--config", str(tmp_path / "missing.yaml")]):
        result = invoke(*args)
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output
        assert len(result.stderr.strip().splitlines()) == 1
        assert result.stderr.startswith("tasksup: error:")
