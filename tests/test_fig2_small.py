"""Figure 2 offline (issue 13): the fig2-small configs mirror the paper's, and the committed model runs them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from reference import slow_per_prompt_choice

from tasksup.runner import run_config
from tasksup.tasks import resolve_tasks
from tasksup.train import load_train_config
from tasksup.train.loop import build_tokenizer

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "checkpoints" / "fig2-small"
SETTINGS = ["add_translate", "country", "copy_add", "letters"]
PER_TASK = 10  # examples per task in the small configs (paper: 20)


@pytest.mark.parametrize("setting", SETTINGS)
def test_small_configs_are_the_papers_but_the_model_and_m(setting):
    paper = yaml.safe_load((ROOT / "configs" / f"fig2_{setting}.yaml").read_text())
    small = yaml.safe_load((ROOT / "configs" / f"fig2_{setting}_small.yaml").read_text())
    k = len(resolve_tasks(paper["tasks"]))
    assert paper["n_examples"] == 20 * k and small["n_examples"] == PER_TASK * k
    assert small.pop("model") == "checkpoints/fig2-small"
    assert {**paper, "n_examples": PER_TASK * k} == small


@pytest.mark.parametrize("config, model, digits", [("train_fig2_small_digits.yaml", MODEL, 1)])
def test_training_config_rebuilds_the_committed_tokenizer(config, model, digits):
    """The data libraries still produce exactly the examples the committed subword vocabulary was learned from."""
    cfg = load_train_config(ROOT / "configs" / config)
    tasks = resolve_tasks(cfg.tasks, one_space=False)
    assert {t.name for t in tasks} >= {"add_es", "capital", "copy_op2", "last_letter_cap"} and len(tasks) == 14
    committed = json.loads((model / "tokenizer.json").read_text())["model"]
    rebuilt = json.loads(build_tokenizer(cfg, tasks).backend_tokenizer.to_str())["model"]
    assert cfg.tokenizer == "bpe" and rebuilt["vocab"] == committed["vocab"] and rebuilt["merges"] == committed["merges"]
    assert max(sum(c.isdigit() for c in t) for t in committed["vocab"]) == digits


@pytest.mark.parametrize("setting", SETTINGS)
def test_each_setting_runs_on_the_committed_model(setting, tmp_path):
    """The prompts of 10 examples per task fit the model's context; the probabilities are a distribution."""
    run = run_config(ROOT / "configs" / f"fig2_{setting}_small.yaml", model=str(MODEL), out=tmp_path,
                     overrides=["n_prompts=4"], progress=False)
    records = [json.loads(line) for line in (run.path / "results.jsonl").read_text().splitlines()]
    assert len(records) == 4
    for r in records:
        assert len(r["probs"]) == len(resolve_tasks(setting))
        assert sum(r["probs"]) + r["other"] == pytest.approx(1.0, abs=1e-5) and min(r["probs"]) >= 0.0
    # the per-prompt view of the K tasks: in summary.json, and as rows of summary.csv (a share each)
    summary = json.loads((run.path / "summary.json").read_text())
    slow = slow_per_prompt_choice(records)
    assert summary["per_prompt"].keys() == slow.keys()
    for key, value in slow.items():
        assert summary["per_prompt"][key] == (value if value is None else pytest.approx(value)), key
    assert summary["per_prompt"]["follows_majority"] is None  # a uniform mixture has no majority task
    shares = {r["quantity"]: r["share"] for r in csv.DictReader((run.path / "summary.csv").open()) if r["share"]}
    assert shares.keys() == {"committed", "follows_example_1", "follows_last_example"}
    for key, share in shares.items():
        assert float(share) == pytest.approx(summary["per_prompt"][key])
    assert (run.path / "fig2.png").is_file()


RECIPES = [("train_fig2_small_mixed_pairs_stage2.yaml", "fig2-small"),
           ("train_fig2_small_mixed_pairs.yaml", "fig2-small/recipes/fig2-small-mixed-pairs-stage1"),
           ("train_fig2_small_mixed_settings.yaml", "fig2-small/recipes/fig2-small-mixed-settings"),
           ("train_fig2_small_digits.yaml", "fig2-small/recipes/fig2-small-one-task"),
           ("train_fig2_small_stage4.yaml", "fig2-small/recipes/bpe-stage4"),
           ("train_fig2_small_stage3.yaml", "fig2-small/recipes/bpe-stage3"),
           ("train_fig2_small_stage2.yaml", "fig2-small/recipes/bpe-stage2"),
           ("train_fig2_small_stage1.yaml", "fig2-small/recipes/bpe-stage1"),
           ("train_fig2_small_char_stage1.yaml", "fig2-small/recipes/char-stage1"),
           ("train_fig2_small_stage5_copy.yaml", "fig2-small/recipes/bpe-stage5-copy"),
           ("train_fig2_small_stage5_copyfocus.yaml", "fig2-small/recipes/bpe-stage5-copyfocus"),
           ("train_fig2_small_stage5_noise.yaml", "fig2-small/recipes/bpe-stage5-noise"),
           ("train_fig2_small_stage5_short.yaml", "fig2-small/recipes/bpe-stage5-short"),
           ("train_fig2_small_char_stage2.yaml", "fig2-small/recipes/char-stage2"),
           ("train_plus_small.yaml", "plus-small"),
           ("train_plus_mixed_control.yaml", "plus-small/recipes/plus-mixed"),
           *[(f"train_numeric6{kind}_{size}.yaml", f"numeric6{kind.replace('_', '-')}-{size}")
             for kind in ("", "_mixed") for size in ("xs", "s", "m", "l")],
           ("train_plus_task_noise.yaml", "plus-small/recipes/plus-bpe-tasknoise-12k")]


@pytest.mark.parametrize("config, model", RECIPES)
def test_configs_resolve_to_the_committed_models_config(config, model):
    """The command in each checkpoint's README reproduces its config exactly (the stopped stage-5 attempts: the
    config their logs came from); each stage's starting model is committed, or is a recipe (logs only) that one of
    these configs re-makes."""
    from dataclasses import asdict

    from tasksup.train.loop import RESUMABLE_KEYS

    def computed(path):  # the keys that may change on --resume (threads, logging) do not change what a run computes
        return {k: v for k, v in asdict(load_train_config(path)).items() if k not in RESUMABLE_KEYS}

    ours = computed(ROOT / "configs" / config)
    assert ours == computed(ROOT / "checkpoints" / model / "train_config.yaml")
    if ours["init_from"]:
        start = ours["init_from"].removeprefix("checkpoints/")
        assert (ROOT / ours["init_from"] / "model.safetensors").is_file() or start in {m for _, m in RECIPES}, start


def test_lambda_config_runs_on_the_committed_model(tmp_path):
    """configs/lambda_fig2_small.yaml (the threshold evidence in the model's README) runs on the model, and a pure
    prompt of either task puts most of the mass on that task's answer."""
    run = run_config(ROOT / "configs" / "lambda_fig2_small.yaml", model=str(MODEL), out=tmp_path,
                     overrides=["n_prompts=4", "lambdas=[0.0, 1.0]"], progress=False)
    pure_fr, pure_en = json.loads((run.path / "summary.json").read_text())["per_lambda"]
    assert pure_fr["lambda"] == 0.0 and pure_fr["add_fr"]["mean"] > 0.5 and pure_fr["add_en"]["mean"] < 0.1
    assert pure_en["lambda"] == 1.0 and pure_en["add_en"]["mean"] > 0.5 and pure_en["add_fr"]["mean"] < 0.1
