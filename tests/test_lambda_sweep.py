"""Fig. 3's lambda sweep on a tiny random model: prompts, exact probabilities, summary, resume, errors."""

from __future__ import annotations

import csv
import json
import math
import shutil

import numpy as np
import pytest
from reference import in_context_logprob, slow_per_prompt_choice

from tasksup import TasksupError, load_model, plots
from tasksup.experiments import lambda_sweep
from tasksup.results import write_summary_files
from tasksup.runner import resummarize, run_config

LAMBDAS = [0.0, 0.25, 0.5, 1.0]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, tiny_model_dirs):
    root = tmp_path_factory.mktemp("sweep")
    cfg = root / "fig3.yaml"
    cfg.write_text(f"experiment: lambda_sweep\ntasks: [plus2, plus6]\nlambdas: {LAMBDAS}\nn_examples: 4\n"
                   "n_prompts: 3\nbatch_size: 5\n")
    run_dir = run_config(cfg, model=str(tiny_model_dirs["gpt2"]), out=root / "out", progress=False)
    return cfg, run_dir


def test_records_follow_lambda_and_match_the_reference(sweep, tiny_model_dirs):
    _, run_dir = sweep
    records = sorted(run_dir.records(), key=lambda r: r["index"])
    assert [r["index"] for r in records] == list(range(12))
    lm = load_model(str(tiny_model_dirs["gpt2"]), device="cpu")
    for r in records:
        lam = LAMBDAS[r["index"] // 3]
        assert r["lambda"] == lam and r["mixture"] == [lam, 1 - lam]
        assert r["counts"] == [round(4 * lam), 4 - round(4 * lam)]
        lines = r["prompt"].split("\n")
        num = int(lines[-1].removesuffix("->"))
        assert r["answers"] == [str(num + 2), str(num + 6)]
        shown = sum(int(b) - int(a) == 2 for a, b in (line.split("->") for line in lines[:-1]))
        assert shown == r["counts"][0]
        slow = [np.exp(in_context_logprob(lm, r["prompt"], a)) for a in r["answers"]]
        assert np.allclose(r["probs"], slow, rtol=1e-4)


def test_summary_and_figure(sweep):
    _, run_dir = sweep
    summary = json.loads((run_dir.path / "summary.json").read_text())
    records = run_dir.records()
    assert [e["lambda"] for e in summary["per_lambda"]] == LAMBDAS
    for e in summary["per_lambda"]:
        p = np.array([r["probs"] for r in records if r["lambda"] == e["lambda"]])
        assert e["plus2"]["mean"] == pytest.approx(p[:, 0].mean())
        assert e["other"]["median"] == pytest.approx(np.median(1 - p.sum(1)))
    means = [e["plus2"]["mean"] for e in summary["per_lambda"]]
    assert summary["pearson_mean_a_vs_lambda"] == pytest.approx(np.corrcoef(LAMBDAS, means)[0, 1])
    assert (run_dir.path / "fig3.png").is_file() and (run_dir.path / "summary.csv").is_file()
    mixed = [r for r in records if min(r["counts"]) > 0]
    first = [r["tasks"][int(np.argmax(r["probs"][:2]))] == r["example_tasks"][0] for r in mixed]
    assert summary["per_prompt"]["n_prompts"] == len(mixed)
    assert summary["per_prompt"]["follows_example_1"] == pytest.approx(np.mean(first))
    rows = list(csv.DictReader((run_dir.path / "summary.csv").open()))
    assert [float(r["lambda"]) for r in rows] == LAMBDAS
    for e, row in zip(summary["per_lambda"], rows):
        slow = slow_per_prompt_choice([r for r in records if r["lambda"] == e["lambda"]])
        assert (e["per_prompt"] is None) == (e["lambda"] in (0.0, 1.0)) == (slow is None)
        for key in ("committed", "follows_example_1", "follows_last_example", "follows_majority"):
            if slow is None or slow[key] is None:
                assert row[key] == ""
            else:
                assert float(row[key]) == pytest.approx(slow[key]) == pytest.approx(e["per_prompt"][key])


def _sweep_record(lam, example_tasks, probs):
    tasks = ["A", "B"]
    return {"lambda": lam, "tasks": tasks, "mixture": [lam, 1 - lam], "example_tasks": example_tasks,
            "counts": [example_tasks.count(t) for t in tasks], "probs": probs,
            "logprobs": [math.log(p) for p in probs], "other": 1 - sum(probs), "kl_normalized": 0.0,
            "collision_resamples": 0}


# lambda, the tasks of the examples in prompt order, P(A), P(B)
HAND_MADE = [
    (0.0, ["B", "B", "B", "B"], [0.01, 0.98]),   # one task: not counted
    (0.5, ["A", "B", "B", "A"], [0.95, 0.03]),   # A: committed (0.969), example 1's and the last's; no majority
    (0.5, ["B", "A", "A", "B"], [0.30, 0.30]),   # a tie: no chosen task
    (0.5, ["B", "A", "B", "A"], [0.60, 0.20]),   # A: not committed (0.75), the last example's
    (0.75, ["B", "A", "A", "A"], [0.02, 0.97]),  # B: committed, example 1's; majority A
    (0.75, ["A", "A", "B", "A"], [0.50, 0.45]),  # A: not committed (0.526), example 1's, the last's, the majority's
    (1.0, ["A", "A", "A", "A"], [0.99, 0.0001]),
]


def test_per_lambda_shares_on_hand_made_records(tmp_path):
    records = [_sweep_record(*r) for r in HAND_MADE]
    cfg = lambda_sweep.Config(tasks=["A", "B"], lambdas=[0.0, 0.5, 0.75, 1.0], n_examples=4)
    summary, rows = lambda_sweep.summarize(records, cfg)
    by_lambda = {e["lambda"]: e["per_prompt"] for e in summary["per_lambda"]}
    assert by_lambda[0.0] is None and by_lambda[1.0] is None
    half, three_quarters = by_lambda[0.5], by_lambda[0.75]
    assert (half["n_prompts"], half["n_tied"], half["n_majority_prompts"]) == (3, 1, 0)
    assert (half["committed"], half["follows_example_1"], half["follows_last_example"]) == pytest.approx((1 / 3, 1 / 3, 2 / 3))
    assert half["follows_majority"] is None
    assert (three_quarters["committed"], three_quarters["follows_example_1"], three_quarters["follows_last_example"],
            three_quarters["follows_majority"]) == pytest.approx((1 / 2, 1, 1 / 2, 1 / 2))
    everything = summary["per_prompt"]
    assert (everything["n_prompts"], everything["committed"], everything["follows_example_1"],
            everything["follows_majority"]) == pytest.approx((5, 2 / 5, 3 / 5, 1 / 2))
    for lam, entry in by_lambda.items():
        assert entry == slow_per_prompt_choice([r for r in records if r["lambda"] == lam])
    write_summary_files(tmp_path, summary, rows)
    table = list(csv.DictReader((tmp_path / "summary.csv").open()))
    assert list(table[0]).count("committed") == 1
    assert [(r["committed"], r["follows_majority"]) for r in table] == [("", ""), (str(1 / 3), ""), ("0.5", "0.5"), ("", "")]
    assert table[1]["A_median"] == str(0.6) and table[2]["follows_example_1"] == "1.0"


def test_figure_has_box_plots_per_lambda_and_names_the_model(sweep, monkeypatch):
    """Fig. 3 beside the curves: per lambda a box of P(A) and one of P(B) over the prompts (their medians are
    the records'), every element in a legend below the data, labelled axes, the model's name in the title."""
    import matplotlib.pyplot as plt

    _, run_dir = sweep
    figures = []
    monkeypatch.setattr(plots, "save", lambda fig, stem: figures.append(fig) or [])
    records = run_dir.records()
    summary = json.loads((run_dir.path / "summary.json").read_text())
    cfg = lambda_sweep.Config(**json.loads((run_dir.path / "config.json").read_text()))
    assert "/" in cfg.model
    lambda_sweep.plot(records, summary, cfg, run_dir.path)
    fig = figures[0]
    try:
        curves, boxes = fig.axes
        assert fig._suptitle.get_text() == "gpt2: plus2 vs plus6 (m = 4)"
        assert curves.get_xlabel() == boxes.get_xlabel() == "share of plus2's examples (lambda)"
        assert boxes.get_ylabel() == "P(answer) per prompt"
        assert len(boxes.patches) == 2 * len(LAMBDAS)  # one box per task and lambda
        medians = sorted(line.get_ydata()[0] for line in boxes.lines
                         if line.get_color() == "black" and line.get_linestyle() == "-")
        expected = sorted(np.median([r["probs"][k] for r in records if r["lambda"] == lam]) for lam in LAMBDAS
                          for k in (0, 1))
        assert medians == pytest.approx(expected)
        (legend,) = fig.legends
        labels = [t.get_text() for t in legend.get_texts()]
        for label in ("P(plus2) per prompt", "P(plus6) per prompt", "P(plus2): mean", "other: median (band: quartiles)",
                      "ideal P(plus2) = lambda", "prompts beyond the whiskers"):
            assert label in labels
        fig.canvas.draw()
        top = legend.get_window_extent().y1
        assert all(top <= ax.get_window_extent().y0 for ax in fig.axes)  # below the axes: it covers no data
    finally:
        plt.close(fig)
    single = []
    monkeypatch.setattr(plots, "save", lambda fig, stem: single.append(fig) or [])
    plots.lambda_curves(summary["per_lambda"], summary["tasks"], "no records", run_dir.path / "x")  # Fig. 5's use
    assert len(single[0].axes) == 1
    plt.close(single[0])


def test_resummarize_needs_no_model(sweep, tmp_path):
    """`tasksup summarize`: the same summary and a figure from results.jsonl alone, the model gone."""
    _, run_dir = sweep
    copy = tmp_path / "copy"
    shutil.copytree(run_dir.path, copy)
    for name in ("summary.json", "summary.csv", "fig3.png", "fig3.pdf"):
        (copy / name).unlink()
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "model": "/nonexistent/gone"}))
    figures = resummarize(copy)
    assert json.loads((copy / "summary.json").read_text()) == json.loads((run_dir.path / "summary.json").read_text())
    assert (copy / "summary.csv").read_text() == (run_dir.path / "summary.csv").read_text()
    assert copy / "fig3.png" in figures and (copy / "fig3.png").is_file()
    assert "resummarized" in json.loads((copy / "run.json").read_text())


def test_resume_recomputes_only_what_is_missing(sweep, tiny_model_dirs):
    cfg, run_dir = sweep
    lines = run_dir.jsonl.read_text().splitlines()
    run_dir.jsonl.write_text("\n".join(lines[:7]) + "\n" + lines[7][:20])  # a cut-off line, as after a kill
    again = run_config(cfg, model=str(tiny_model_dirs["gpt2"]), out=run_dir.path, progress=False)
    redo = {r["index"]: r for r in again.records()}
    assert len(again.records()) == 12
    for line in lines:
        r = json.loads(line)
        assert np.allclose(redo[r["index"]]["probs"], r["probs"], rtol=1e-6) and redo[r["index"]]["prompt"] == r["prompt"]


def test_n_prompts_cannot_change_on_resume(sweep, tiny_model_dirs, tmp_path):
    """Prompt i of lambda j is index j * n_prompts + i: grown from 3 to 4 per lambda, the folder would hold other
    prompts than a fresh 4-prompt run under the same indices, so it is refused with one line and left as it was;
    a fresh 4-prompt run and a resumed interrupted one agree prompt for prompt."""
    cfg, run_dir = sweep
    copy = tmp_path / "copy"
    shutil.copytree(run_dir.path, copy)
    before = (copy / "results.jsonl").read_text()
    model = str(tiny_model_dirs["gpt2"])
    with pytest.raises(TasksupError, match=r"differs in n_prompts\) \(n_prompts decides which prompt each index"):
        run_config(cfg, model=model, out=copy, overrides=["n_prompts=4"], progress=False)
    assert (copy / "results.jsonl").read_text() == before
    assert json.loads((copy / "config.json").read_text()) == json.loads((run_dir.path / "config.json").read_text())
    fresh = run_config(cfg, model=model, out=tmp_path / "fresh", overrides=["n_prompts=4"], progress=False)
    cut = tmp_path / "cut"
    shutil.copytree(fresh.path, cut)
    (cut / "results.jsonl").write_text("".join(fresh.jsonl.read_text().splitlines(keepends=True)[:5]))
    resumed = run_config(cfg, model=model, out=cut, overrides=["n_prompts=4"], progress=False)
    key = lambda r: (r["index"], r["lambda"], r["prompt"], r["answers"])  # noqa: E731
    assert sorted(map(key, resumed.records())) == sorted(map(key, fresh.records()))


@pytest.mark.parametrize("body, message", [
    ("tasks: [ret1, ret2, ret3]\n", "exactly two tasks"),
    ("lambdas: [0.5, 1.5]\n", "numbers in [0, 1]"),
    ("lambdas: [0.5, 0.5]\n", "repeat"),
])
def test_bad_sweeps_fail_before_loading_a_model(tmp_path, body, message):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("experiment: lambda_sweep\nmodel: /nonexistent/model\n" + body)
    with pytest.raises(TasksupError, match=message.replace("[", r"\[").replace("]", r"\]")):
        run_config(cfg, out=tmp_path / "out", progress=False)
