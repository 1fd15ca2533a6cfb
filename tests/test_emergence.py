"""Superposition vs averaging along training (issue 12): the masses, training tokens, the family's CSV and
figure, resume, errors. Two tiny plus runs trained for 4 steps with snapshots, and one model of no run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from reference import in_context_logprob

from tasksup import TasksupError, load_model, metrics
from tasksup.experiments import emergence, get_experiment, lambda_sweep, mixture
from tasksup.models import build_char_tokenizer
from tasksup.runner import run_config
from tasksup.tasks import PromptBuilder, resolve_tasks
from tasksup.train import TrainConfig, train

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "emergence_plus.yaml"
RUN = dict(tasks="plus", n_examples=5, batch_size=4, steps=4, warmup_steps=1, log_every=1, eval_every=0,
           final_eval_prompts=0, save_every=0, snapshot_every=2, cpu_threads=1)
LAMBDAS = [0.5, 0.75]
FAST = ["n_examples=4", "n_prompts=3", f"lambdas={LAMBDAS}", "bootstrap_resamples=200", "batch_size=4"]


def test_family_masses_on_hand_built_cases():
    answers = ["10", "11", "12", "13", "14", "15"]
    probs = [0.01, 0.3, 0.05, 0.1, 0.2, 0.02]
    m = metrics.family_masses(answers, probs, 1, 4)  # A = task 1, B = task 4: between 2, 3; outside 0, 5
    assert m == pytest.approx({"p_a": 0.3, "p_b": 0.2, "superposition_mass": 0.5, "averaging_mass": 0.15,
                               "outside_mass": 0.03})
    assert metrics.family_masses(answers, probs, 4, 1)["averaging_mass"] == pytest.approx(0.15)  # B before A
    # a bystander equal to A's answer adds nothing; a repeated answer counts once, in the first group it is in
    answers = ["x", "a", "a", "y", "y", "b", "x"]
    probs = [0.1, 0.4, 0.4, 0.2, 0.2, 0.3, 0.1]
    m = metrics.family_masses(answers, probs, 1, 5)
    assert (m["averaging_mass"], m["outside_mass"]) == pytest.approx((0.2, 0.1))


@pytest.fixture(scope="module")
def family(tmp_path_factory, tiny_model_dirs):
    """A: 2x64 run, finished (snapshots 2, 4); B: 1x32 run stopped at step 2 (resume state); a model of no run."""
    root = tmp_path_factory.mktemp("emergence")
    a = train(TrainConfig(preset="tiny", **RUN), root / "run-a", progress=False)
    b = train(TrainConfig(preset="tiny", n_layer=1, n_head=2, n_embd=32, **RUN), root / "run-b", stop_after=2,
              progress=False)
    models = [a / "snapshots" / "step-000002", a / "snapshots" / "step-000004", b, tiny_model_dirs["gpt2"]]
    out = root / "out"
    run_config(CONFIG, models=[str(m) for m in models], out=out, progress=False, overrides=FAST)
    return models, out


def member_dirs(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if p.is_dir())


def test_snapshots_of_a_run_get_distinct_folders(family):
    _, out = family
    assert [p.name for p in member_dirs(out)] == ["gpt2", "run-a_step-000002", "run-a_step-000004", "run-b"]


def test_masses_match_a_slow_computation(family):
    models, out = family
    lm = load_model(str(models[1]), device="cpu")
    records = [json.loads(line) for line in (out / "run-a_step-000004" / "results.jsonl").read_text().splitlines()]
    assert sorted(r["index"] for r in records) == list(range(6))
    family_tasks = resolve_tasks("plus")
    for r in records:
        num = int(r["prompt"].split("\n")[-1].removesuffix("->"))
        answers = {t.name: t.answer({"num": num}) for t in family_tasks}
        slow = {t: np.exp(in_context_logprob(lm, r["prompt"], a)) for t, a in answers.items()}
        ab = {answers["plus2"], answers["plus6"]}
        between = {answers[f"plus{k}"] for k in (3, 4, 5)} - ab
        outside = {answers[f"plus{k}"] for k in (0, 1, 7, 8, 9)} - ab - between
        prob = {answers[t]: p for t, p in slow.items()}
        assert r["p_a"] == pytest.approx(slow["plus2"], rel=1e-4) and r["p_b"] == pytest.approx(slow["plus6"], rel=1e-4)
        assert r["superposition_mass"] == pytest.approx(slow["plus2"] + slow["plus6"], rel=1e-4)
        assert r["averaging_mass"] == pytest.approx(sum(prob[x] for x in between), rel=1e-4)
        assert r["outside_mass"] == pytest.approx(sum(prob[x] for x in outside), rel=1e-4)
        assert r["family_probs"] == pytest.approx([slow[t.name] for t in family_tasks], rel=1e-4)


def test_prompts_are_fig3s(family):
    """With the same lambdas, prompt index i is the lambda sweep's prompt i."""
    _, out = family
    sweep = lambda_sweep.Config(tasks=["plus2", "plus6"], lambdas=LAMBDAS, n_examples=4, n_prompts=3)
    builder = PromptBuilder(resolve_tasks(sweep.tasks))
    for line in (out / "gpt2" / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        lam = LAMBDAS[r["index"] // 3]
        assert r["lambda"] == lam
        assert r["prompt"] == mixture.build_prompt(lambda_sweep.mixture_config(sweep, lam), builder, r["index"]).text


def mean_sequence_tokens(run: Path) -> float:
    """Slow and obvious: rebuild the run's first 256 training sequences as docs/training.md defines them (char
    tokenizer, no BOS: one token per character)."""
    cfg = yaml.safe_load((run / "train_config.yaml").read_text())
    tasks = resolve_tasks(cfg["tasks"])
    builder = PromptBuilder(tasks)
    lengths = []
    for i in range(256):
        rng = np.random.default_rng([cfg["seed"], 1, 0, i])
        task = tasks[int(rng.integers(len(tasks)))]
        lengths.append(len(builder.training_sequence(task, cfg["n_examples"], rng).text))
    return float(np.mean(lengths))


def test_csv_rows_and_figure(family):
    models, out = family
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [(r["model"], float(r["lambda"])) for r in rows] == [(str(m), lam) for m in models for lam in LAMBDAS]
    per_run = {str(run): mean_sequence_tokens(run) for run in (models[0].parents[1], models[2])}
    expected = {0: (2, 2, 64), 1: (4, 2, 64), 2: (2, 1, 32)}  # model -> step, n_layer, n_embd
    for n, r in enumerate(rows):
        member = json.loads((member_dirs(out)[[1, 2, 3, 0][n // 2]] / "summary.json").read_text())
        entry = member["per_lambda"][n % 2]
        for q in emergence.QUANTITIES:
            assert float(r[f"{q}_mean"]) == pytest.approx(entry[q]["mean"])
            assert float(r[f"{q}_ci_low"]) <= float(r[f"{q}_mean"]) <= float(r[f"{q}_ci_high"])
        member_records = [json.loads(x) for x in (member_dirs(out)[[1, 2, 3, 0][n // 2]] / "results.jsonl")
                          .read_text().splitlines()]
        choice = metrics.per_prompt_choice([x for x in member_records if x["lambda"] == entry["lambda"]])
        assert float(r["committed"]) == pytest.approx(choice["committed"])
        for key in ("follows_example_1", "follows_last_example", "follows_majority"):
            assert (r[key] == "") if choice[key] is None else float(r[key]) == pytest.approx(choice[key])
        if n // 2 == 3:  # the model of no run: no training position
            assert r["run"] == r["step"] == r["tokens"] == ""
            continue
        step, n_layer, n_embd = expected[n // 2]
        assert (int(r["step"]), int(r["n_layer"]), int(r["n_embd"]), int(r["batch_size"])) == (step, n_layer, n_embd, 4)
        assert float(r["tokens_per_sequence"]) == pytest.approx(per_run[r["run"]])
        assert float(r["tokens"]) == pytest.approx(step * 4 * per_run[r["run"]])
    assert (out / "emergence.png").is_file() and (out / "emergence.pdf").is_file()


def test_fixed_length_family_tokens_are_exact(tmp_path):
    """ret lines are all 12 characters: m = 5 examples are 60 tokens, whatever is drawn; the run reads characters."""
    (tmp_path / "train_config.yaml").write_text(yaml.safe_dump({"tasks": "ret", "n_examples": 5, "batch_size": 8}))
    build_char_tokenizer().save_pretrained(tmp_path)
    assert emergence.run_data(tmp_path) == (8, 60.0, "characters")


@pytest.mark.parametrize("keys, label", [({}, "characters"), ({"tokenizer": "bpe"}, "BPE, numbers whole (<= 3 digits)"),
                                         ({"tokenizer": "bpe", "bpe_digits": 1}, "BPE, digit by digit")])
def test_tokenization_is_the_phase_diagrams_third_axis(keys, label):
    from tasksup.train import TrainConfig

    assert emergence.tokenization_of(TrainConfig(tasks="plus", **keys)) == label


def test_interrupted_run_resumes(family):
    models, out = family
    jsonl = out / "run-b" / "results.jsonl"
    full = jsonl.read_text().splitlines(keepends=True)
    jsonl.write_text("".join(full[:2]) + full[2][:30])
    run_config(CONFIG, models=[str(m) for m in models], out=out, progress=False,
               overrides=FAST)
    again = [json.loads(line) for line in jsonl.read_text().splitlines()]
    before = {json.loads(line)["index"]: json.loads(line) for line in full}
    assert again[:2] == [json.loads(x) for x in full[:2]]
    assert sorted(r["index"] for r in again) == sorted(before)
    for r in again:
        assert r["family_probs"] == pytest.approx(before[r["index"]]["family_probs"], rel=1e-6)


def test_results_of_a_deleted_run_are_kept(family, tmp_path):
    """A checkpoint whose run folder is gone still has its row (size, tokens) from its complete results;
    with a config its results do not cover, the run stops on the missing model."""
    import shutil

    models, _ = family
    run = tmp_path / "run-a"
    shutil.copytree(models[0].parents[1], run)
    names = [str(run / "snapshots" / "step-000004"), str(models[2])]
    out = tmp_path / "out"
    run_config(CONFIG, models=names, out=out, progress=False, overrides=FAST)
    before = list(csv.DictReader((out / "summary.csv").open()))
    assert json.loads((out / "run-a_step-000004" / "checkpoint.json").read_text())["step"] == 4
    shutil.rmtree(run)
    run_config(CONFIG, models=names, out=out, progress=False, overrides=FAST)
    assert list(csv.DictReader((out / "summary.csv").open())) == before
    with pytest.raises(TasksupError, match="step-000004"):
        run_config(CONFIG, models=names, out=out, progress=False, overrides=FAST + ["n_prompts=4"])


def test_errors(tmp_path, tiny_model_dirs):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("experiment: emergence\ntasks: [plus2, num_p1]\n")
    with pytest.raises(TasksupError, match="one task family"):
        run_config(cfg, models=["/nonexistent"], out=tmp_path / "x", progress=False)
    # numeric6 answers of 10, 11, 20, 99 have prefixes among them ("10" / "100"): without a terminator they overlap
    cfg.write_text("experiment: emergence\ntasks: [num_p1, num_m1]\nn_examples: 4\nn_prompts: 100\n")
    with pytest.raises(TasksupError, match="prefix"):
        run_config(cfg, models=[str(tiny_model_dirs["gpt2"])], out=tmp_path / "y", progress=False)


def test_experiment_is_registered():
    assert get_experiment("emergence") is emergence
