"""Figures 4 and 5 and `tasksup vectors layers` end to end on a tiny random GPT-2 (small settings)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from tasksup import load_model
from tasksup.cli import app
from tasksup.runner import prepare, run_config
from tasksup.testing import save_tiny_model
from tasksup.vectors import Patch, interpolate, patching

FAST = ["n_prompts=3", "n_examples=6", "n_queries=2", "top1_max_tokens=1"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tv") / "gpt2", "gpt2", layers=3)


def test_fig4_records_summary_and_resume(model_dir, tmp_path):
    sets = FAST + ["mixtures=[[1,0,0],[0,1,0],[0,0,1],[0.5,0.5,0],['1/3','1/3','1/3']]"]
    run = run_config("configs/fig4_copy_add.yaml", model=str(model_dir), out=tmp_path, overrides=sets, progress=False)
    records = run.records()
    assert len(records) == 5 * 3 and len({tuple(r["index"]) for r in records}) == 15
    layer = json.loads((tmp_path / "layers.json").read_text())["layer"]
    assert all(r["layer"] == layer and len(r["vector"]) == 32 for r in records)
    assert {"prompt", "tasks", "mixture", "answers", "logprobs", "probs"} <= set(records[0])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary["per_mixture"]) == 5
    for entry in summary["per_mixture"]:
        assert abs(sum(entry["recovered"]) - 1) < 1e-9 and min(entry["recovered"]) >= 0
    report = json.loads((tmp_path / "layers.json").read_text())
    assert len(report["mean_layer_accuracy"]) == 3 and report["layer"] == int(np.argmax(report["mean_layer_accuracy"]))
    assert (tmp_path / "fig4.png").is_file() and (tmp_path / "fig4_layers.png").is_file()
    # an interrupted run resumes: drop the last records and run again -> the same records
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    (tmp_path / "results.jsonl").write_text("\n".join(lines[:-4]) + "\n")
    again = run_config("configs/fig4_copy_add.yaml", model=str(model_dir), out=tmp_path, overrides=sets, progress=False)
    key = lambda r: tuple(r["index"])  # noqa: E731
    resumed = sorted(again.records(), key=key)
    assert len(resumed) == len(records)
    for a, b in zip(resumed, sorted(records, key=key)):  # recomputed in other batches: equal up to float noise
        assert (a["index"], a["prompt"], a["answers"]) == (b["index"], b["prompt"], b["answers"])
        np.testing.assert_allclose(a["vector"], b["vector"], atol=1e-5)
        np.testing.assert_allclose(a["logprobs"], b["logprobs"], atol=1e-5)


def test_fig5_rows_and_patched_probabilities(model_dir, tmp_path):
    sets = FAST + ["lambdas=[0,0.5,1]", "n_examples=4"]
    run = run_config("configs/fig5_copy_add.yaml", model=str(model_dir), out=tmp_path, overrides=sets, progress=False)
    records = run.records()
    assert len(records) == 2 * 3 * 3
    assert {r["mode"] for r in records} == {"patched", "icl"}
    for r in records:
        assert r["mixture"] == [r["lambda"], 1 - r["lambda"]]
        assert ("\n" in r["prompt"]) == (r["mode"] == "icl")
    # a patched row is the lone query scored with V_lambda patched at the layer: recompute it by hand
    vectors = load_file(str(tmp_path / "vectors.safetensors"))
    lm = load_model(str(model_dir), device="cpu")
    row = next(r for r in records if r["mode"] == "patched" and r["lambda"] == 0.5)
    v = interpolate(vectors["copy_op1"][row["layer"]], vectors["copy_op2"][row["layer"]], 0.5)
    with patching(lm.model, [Patch(row["layer"], v)]):
        np.testing.assert_allclose(lm.answer_probs(row["prompt"], row["answers"])[0], row["probs"], rtol=1e-5)
    icl = next(r for r in records if r["mode"] == "icl" and r["index"][0] == row["index"][0])
    assert icl["prompt"].endswith("\n" + row["prompt"]) and icl["answers"] == row["answers"]
    assert (tmp_path / "fig5_patched.png").is_file() and (tmp_path / "fig5_icl.png").is_file()


def test_cli_layers_json_is_all_of_stdout(model_dir):
    result = CliRunner().invoke(app, ["vectors", "layers", "--model", str(model_dir), "--task", "copy_op1",
                                      "--n-prompts", "2", "--n-examples", "3", "--n-queries", "2", "--max-tokens", "1",
                                      "--json", "--no-progress"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)  # nothing but the JSON object: `| jq` works
    assert len(report["layer_accuracy"]) == 3 and report["best_layer"] == int(np.argmax(report["layer_accuracy"]))
    assert all(0.0 <= a <= 1.0 for a in report["layer_accuracy"])


@pytest.mark.parametrize("name", ["fig4_copy_add", "fig4_translate", "fig5_copy_add", "fig5_translate",
                                  "fig4_copy_add_small", "fig4_translate_small", "fig5_copy_add_small",
                                  "fig5_translate_small"])
def test_shipped_configs_validate(name):
    experiment, cfg = prepare(f"configs/{name}.yaml", model="any")  # mixtures exact at m, tasks known, ...
    assert experiment.__name__.endswith(("task_vectors", "vector_patching")) and cfg.n_prompts == 100
    if name.startswith("fig4"):
        assert len(cfg.mixtures) == 13


def test_cli_bad_task_is_a_one_line_error(model_dir):
    result = CliRunner().invoke(app, ["vectors", "layers", "--model", str(model_dir), "--task", "nope"])
    assert result.exit_code == 2 and "unknown task" in result.output
