"""The scaling experiment (Fig. 6): r and KL, the paper's distributions, collision resampling,
bootstrap intervals, and `tasksup run --models A B` end to end on two tiny models."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from reference import in_context_logprob
from typer.testing import CliRunner

from tasksup import metrics, scoring
from tasksup.cli import app
from tasksup.config import read_yaml
from tasksup.errors import TasksupError
from tasksup.experiments import get_experiment, mixture, scaling
from tasksup.tasks import PromptBuilder, Task, example_counts, get_input_space, normalize_mixture, resolve_tasks

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "fig6_scaling.yaml"
NUMERIC6 = resolve_tasks("numeric6")


def kl_by_hand(d, p) -> float:
    """sum_k D_k log(D_k / P_k) over D_k > 0, the released code's formula, in plain Python."""
    return sum(dk * math.log(dk / pk) for dk, pk in zip(d, p) if dk > 0)


# -- r and KL ------------------------------------------------------------------------------------


def test_kl_on_hand_built_case():
    d = [0.5, 0.25, 0.25, 0.0]
    p = [0.25, 0.25, 0.125, 0.1]
    # by hand: 0.5 log 2 + 0.25 log 1 + 0.25 log 2 = 0.75 log 2; the task with D = 0 contributes nothing
    assert metrics.kl_paper(d, np.log(p)) == pytest.approx(0.75 * math.log(2), abs=1e-12)
    s = sum(p)
    assert metrics.kl_normalized(d, np.log(p)) == pytest.approx(kl_by_hand(d, [x / s for x in p]), abs=1e-12)
    # calibrated model: P proportional to D gives normalized KL 0 but the raw formula counts the lost mass
    d, p = [0.5, 0.25, 0.25], [0.4, 0.2, 0.2]
    assert metrics.kl_normalized(d, np.log(p)) == pytest.approx(0.0, abs=1e-12)
    assert metrics.kl_paper(d, np.log(p)) == pytest.approx(math.log(1 / 0.8), abs=1e-12)


def test_r_on_hand_built_case():
    answers = ["45", "-45", "46", "44", "90", "2025"]
    assert metrics.tasks_in_top(answers, ["46", "45", "4", "2025 ", "x", "90"]) == 3
    assert metrics.tasks_in_top(answers, answers[::-1]) == 6
    assert metrics.tasks_in_top(answers, []) == 0


# -- the paper's distributions -------------------------------------------------------------------


@pytest.mark.parametrize("name, fractions, counts", [
    ("D1", [1 / 6] * 6, [10] * 6),
    ("D2", [0.1, 0.1, 0.5, 0.1, 0.1, 0.1], [6, 6, 30, 6, 6, 6]),
    ("D3", [1 / 4, 1 / 12] * 3, [15, 5] * 3),
])
def test_paper_distributions_are_exact(name, fractions, counts):
    cfg = scaling.Config()
    assert read_yaml(CONFIG)["distributions"][name] == cfg.distributions[name]  # the config file = the defaults
    d = normalize_mixture(cfg.distributions[name], 6)
    assert d.tolist() == pytest.approx(fractions, abs=1e-15)
    assert d.sum() == pytest.approx(1.0, abs=1e-15)
    assert example_counts(d, cfg.n_examples) == counts
    # the prompts hold exactly those counts: read each example's task back from its answer
    mcfg = scaling.member_config(cfg, name)
    builder = PromptBuilder(NUMERIC6, "\n")
    for i in range(3):
        p = mixture.build_prompt(mcfg, builder, i)
        seen = [0] * 6
        for line in p.text.split("\n")[:-1]:
            x, y = line.split("->")
            seen[[t.answer({"num": int(x)}) for t in NUMERIC6].index(y)] += 1
        assert seen == counts
        assert p.text.split("\n")[-1] == p.query_text


def test_rounded_decimals_are_rejected():
    cfg = scaling.Config(distributions={"D3": [0.25, 0.083] * 3})
    with pytest.raises(TasksupError, match="1/12"):
        scaling.check(cfg)
    with pytest.raises(TasksupError, match="distribution D2"):
        scaling.check(scaling.Config(distributions={"D2": [0.5, 0.5]}))


def test_prompt_i_is_shared_by_all_distributions():
    """Prompt i under D1, D2, D3 has the same inputs and query; only the example labels differ."""
    cfg = scaling.Config()
    builder = PromptBuilder(NUMERIC6, "\n")
    prompts = [mixture.build_prompt(scaling.member_config(cfg, name), builder, 4) for name in cfg.distributions]
    inputs = [[line.split("->")[0] for line in p.text.split("\n")] for p in prompts]
    assert inputs[0] == inputs[1] == inputs[2]
    assert len({p.text for p in prompts}) == 3


# -- collision resampling ------------------------------------------------------------------------


def prefix_colliding_numbers() -> set[int]:
    """Two-digit nums for which one numeric6 answer is a prefix of (or equal to) another: slow and obvious."""
    bad = set()
    for n in range(10, 100):
        answers = [t.answer({"num": n}) for t in NUMERIC6]
        if any(i != j and b.startswith(a) for i, a in enumerate(answers) for j, b in enumerate(answers)):
            bad.add(n)
    return bad


def test_prefix_collisions_are_resampled_without_a_terminator():
    bad = prefix_colliding_numbers()
    assert 10 in bad and 11 in bad  # "10" / "100" (10^2), "12" / "121" (11+1, 11^2)
    cfg = scaling.Config(terminator=None)
    builder = PromptBuilder(NUMERIC6, "\n")
    prompts = [mixture.build_prompt(scaling.member_config(cfg, "D1"), builder, i) for i in range(300)]
    assert all(p.query["num"] not in bad for p in prompts)
    assert sum(p.collision_resamples for p in prompts) > 0
    # with the config's terminator prefixes are harmless: no numeric6 query is ever rejected
    cfg = scaling.Config()
    prompts = [mixture.build_prompt(scaling.member_config(cfg, "D1"), builder, i) for i in range(300)]
    assert sum(p.collision_resamples for p in prompts) == 0
    assert any(p.query["num"] in bad for p in prompts)


def test_equal_answers_are_resampled():
    """Two tasks that agree whenever num is a multiple of 10: those queries are never kept."""
    num = get_input_space("num")
    tens = Task("test_round_down", num, lambda x: str(x["num"] // 10 * 10))
    builder = PromptBuilder([NUMERIC6[0], tens], "\n")
    prompts = [builder.build("uniform", 20, np.random.default_rng([0, i]), terminator="\n") for i in range(300)]
    assert all(p.answers[0] != p.answers[1] and p.query["num"] % 10 for p in prompts)
    # 9 of the 90 inputs collide: about 0.11 rejected draws per prompt
    assert 10 <= sum(p.collision_resamples for p in prompts) <= 70


# -- one prompt pass for the scores and the top-k ------------------------------------------------


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_score_and_search_equals_separate_calls_and_the_reference(tiny_lm, arch):
    lm = tiny_lm(arch)
    builder = PromptBuilder(NUMERIC6, "\n")
    prompts = [builder.build("uniform", 12 + 3 * i, np.random.default_rng([5, i]), terminator="\n") for i in range(3)]
    texts, answers = [p.text for p in prompts], [p.answers for p in prompts]
    scores, found = lm.score_and_search(texts, answers, "\n", k=6, stop="\n", max_tokens=2)
    np.testing.assert_allclose(scores.logprobs, lm.score(texts, answers, "\n").logprobs, rtol=1e-5)
    slow = [[in_context_logprob(lm, t, a, "\n") for a in row] for t, row in zip(texts, answers)]
    np.testing.assert_allclose(scores.logprobs, slow, rtol=1e-4)
    batch = min(scoring.SEARCH_BATCH, scoring.FORWARD_ROWS // len(texts))  # each prompt's share of a forward
    for t, f in zip(texts, found):
        alone = lm.search(t, k=6, stop="\n", max_tokens=2)
        assert [o for o, _ in f.outputs] == [o for o, _ in alone.outputs]
        np.testing.assert_allclose([q for _, q in f.outputs], [q for _, q in alone.outputs], rtol=1e-5)
        same_batch = scoring.best_first_outputs(lm.model, lm.tokenizer, lm.encode(t), 6, "\n", 2, lm.eos_ids, batch=batch)
        assert f.expansions == same_batch.expansions  # sharing forwards pops what a lone search of that batch pops


@pytest.mark.realvocab
def test_score_and_search_with_a_boundary_merge(real_vocab_lm):
    """The answers merge with the prompt's last token: they are scored from the shorter prefix."""
    lm = real_vocab_lm("gpt2")
    texts, answers = ["The capital of France is Par", "x->"], [["is", "isian"], ["12", "13"]]
    scores, found = lm.score_and_search(texts, answers, "\n", k=2, stop="\n", max_tokens=1)
    assert scores.boundary_merge[0] == [True, True]
    slow = [[in_context_logprob(lm, t, a, "\n") for a in row] for t, row in zip(texts, answers)]
    np.testing.assert_allclose(scores.logprobs, slow, rtol=1e-4)
    assert [o for o, _ in found[0].outputs] == [o for o, _ in lm.search(texts[0], 2, "\n", 1).outputs]


def test_widened_gpt2_computes_the_same_function(tiny_lm):
    """The benchmark's stand-in for a ~10M model: wider and deeper, same next-token distributions."""
    import torch

    from tasksup.models.widen import widen_gpt2

    small = tiny_lm("gpt2").model
    big = widen_gpt2(small, 3, extra_layers=2)
    c = big.config
    assert (c.n_embd, c.n_head, c.n_layer) == (3 * small.config.n_embd, 3 * small.config.n_head, small.config.n_layer + 2)
    assert sum(p.numel() for p in big.parameters()) > 6 * sum(p.numel() for p in small.parameters())
    ids = torch.randint(3, 90, (2, 40))
    with torch.no_grad():
        torch.testing.assert_close(big(ids).logits, small(ids).logits, rtol=1e-4, atol=1e-4)


# -- bootstrap intervals and summaries -----------------------------------------------------------


def test_bootstrap_ci_matches_normal_theory_and_is_seeded():
    x = np.random.default_rng(1).normal(2.0, 1.5, size=400)
    ci = metrics.bootstrap_mean_ci(x, 0.95, 4000, seed=3)
    half = 1.959964 * x.std(ddof=1) / math.sqrt(len(x))
    assert ci["ci_low"] == pytest.approx(x.mean() - half, abs=0.1 * half)
    assert ci["ci_high"] == pytest.approx(x.mean() + half, abs=0.1 * half)
    assert metrics.bootstrap_mean_ci(x, 0.95, 4000, seed=3) == ci
    assert metrics.bootstrap_mean_ci(x, 0.95, 4000, seed=4) != ci
    assert metrics.bootstrap_mean_ci([6, 6, 6], 0.95, 1000) == {"ci_low": 6.0, "ci_high": 6.0}


def fake_records(rng, model: str, cfg) -> list[dict]:
    out = []
    for name in cfg.distributions:
        d = normalize_mixture(cfg.distributions[name], 6).tolist()
        for i in range(cfg.n_prompts):
            p = rng.dirichlet(np.ones(7))[:6]
            out.append({"model": model, "distribution": name, "index": i, "tasks": [t.name for t in NUMERIC6],
                        "mixture": d, "counts": example_counts(np.array(d), 60), "probs": p.tolist(),
                        "r": int(rng.integers(0, 7)), "kl": kl_by_hand(d, p), "other": 1 - p.sum(),
                        "kl_normalized": kl_by_hand(d, p / p.sum()), "collision_resamples": 0})
    return out


def test_summaries_and_figures(tmp_path):
    cfg = scaling.Config(n_prompts=30, bootstrap_resamples=500)
    rng = np.random.default_rng(0)
    members = []
    for name, size in (("small", 1000), ("big", 5000)):
        recs = fake_records(rng, name, cfg)
        summary, rows = scaling.summarize(recs[::-1], scaling.Config(**{**cfg.__dict__, "model": name}))
        assert len(rows) == 3 * len(scaling.QUANTITIES)
        for dist, entry in summary["distributions"].items():
            mine = [r for r in recs if r["distribution"] == dist]
            for q in scaling.QUANTITIES:
                assert entry[q]["mean"] == pytest.approx(np.mean([r[q] for r in mine]), abs=1e-12)
                assert entry[q]["ci_low"] <= entry[q]["mean"] <= entry[q]["ci_high"]
            assert entry["r_histogram"] == np.bincount([r["r"] for r in mine], minlength=7).tolist()
        members.append({"name": name, "identity": {"n_parameters": size}, "summary": summary})
    family, rows = scaling.summarize_models(members, cfg)
    assert [(r["model"], r["distribution"]) for r in rows] == [(m, d) for m in ("small", "big") for d in ("D1", "D2", "D3")]
    assert rows[4]["kl_mean"] == members[1]["summary"]["distributions"]["D2"]["kl"]["mean"]
    paths = scaling.plot_models(family, cfg, tmp_path)
    assert {p.name for p in paths} >= {"fig6a_r.png", "fig6b_kl.png", "fig6a_r.pdf", "fig6b_kl.pdf"}


# -- the command line on two tiny models, end to end ---------------------------------------------

FAST = ["--set", "n_prompts=2", "--set", "top_max_tokens=2", "--set", "bootstrap_resamples=200", "--no-progress"]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_cli_two_tiny_models_end_to_end(tiny_model_dirs, tmp_path):
    a, b = tiny_model_dirs["gpt2"], tiny_model_dirs["llama"]
    out = tmp_path / "fig6"
    res = invoke("run", CONFIG, "--models", a, b, "--out", out, *FAST)
    assert res.exit_code == 0, res.output
    per_model = {}
    for model, slug in ((a, "gpt2"), (b, "llama")):
        rows = lines(out / slug / "results.jsonl")
        assert sorted((r["distribution"], r["index"]) for r in rows) == [(d, i) for d in ("D1", "D2", "D3") for i in (0, 1)]
        for r in rows:
            assert r["model"] == str(model)
            assert r["kl"] == pytest.approx(kl_by_hand(r["mixture"], r["probs"]), rel=1e-9)
            s = sum(r["probs"])
            assert r["kl_normalized"] == pytest.approx(kl_by_hand(r["mixture"], [p / s for p in r["probs"]]), rel=1e-9)
            assert r["r"] == sum(ans in [o for o, _ in r["top"]] for ans in r["answers"])
            assert len(r["top"]) <= 6
        per_model[slug] = rows
    # both models saw the same prompts
    key = lambda r: (r["distribution"], r["index"])  # noqa: E731
    assert {key(r): r["prompt"] for r in per_model["gpt2"]} == {key(r): r["prompt"] for r in per_model["llama"]}
    with (out / "summary.csv").open() as f:
        import csv

        table = list(csv.DictReader(f))
    assert [(t["model"], t["distribution"]) for t in table] == [(str(m), d) for m in (a, b) for d in ("D1", "D2", "D3")]
    for t in table:
        mine = [r for r in per_model["gpt2" if t["model"] == str(a) else "llama"] if r["distribution"] == t["distribution"]]
        assert float(t["kl_mean"]) == pytest.approx(np.mean([r["kl"] for r in mine]), rel=1e-9)
        assert float(t["r_mean"]) == pytest.approx(np.mean([r["r"] for r in mine]), abs=1e-12)
    assert (out / "fig6a_r.png").is_file() and (out / "fig6b_kl.png").is_file()
    assert json.loads((out / "config.json").read_text())["models"] == [str(a), str(b)]

    # an interrupted second model resumes: its kept rows stay, the missing ones are recomputed identically
    jsonl = out / "llama" / "results.jsonl"
    full = jsonl.read_text().splitlines(keepends=True)
    jsonl.write_text("".join(full[:3]) + full[3][:25])
    res = invoke("run", CONFIG, "--models", a, b, "--out", out, *FAST)
    assert res.exit_code == 0, res.output
    again = lines(jsonl)
    assert again[:3] == [json.loads(x) for x in full[:3]]
    before = {key(r): r["probs"] for r in per_model["llama"]}
    assert sorted(key(r) for r in again) == sorted(before)
    for r in again:
        assert r["probs"] == pytest.approx(before[key(r)], rel=1e-6)
    assert len(lines(out / "gpt2" / "results.jsonl")) == 6

    # the finished family run again: nothing computed, no file of the family or its members changes
    files = {f: f.read_bytes() for f in out.rglob("*") if f.is_file() and f.name != "warnings.log"}
    assert invoke("run", CONFIG, "--models", a, b, "--out", out, *FAST).exit_code == 0
    assert {f: f.read_bytes() for f in out.rglob("*") if f.is_file() and f.name != "warnings.log"} == files


def test_cli_errors(tiny_model_dirs, tmp_path):
    a = tiny_model_dirs["gpt2"]
    for args, message in [
        (["--models", a, a], "would share the results folder"),
        (["--model", a, "--models", a], "either --model or --models"),
        (["--set", "distributions={}"], "at least one"),
        ([], "no models given"),
    ]:
        res = invoke("run", CONFIG, *args, "--out", tmp_path / "x", *FAST)
        assert res.exit_code == 2, res.output
        assert message in res.output and "Traceback" not in res.output
    fig2 = Path(CONFIG).with_name("fig2_copy_add.yaml")
    res = invoke("run", fig2, "--models", a, tiny_model_dirs["llama"], "--out", tmp_path / "y")
    assert res.exit_code == 2 and "takes one model" in res.output


def test_experiment_is_registered():
    assert get_experiment("scaling") is scaling
