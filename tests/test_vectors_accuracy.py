"""The fast accuracy of layer selection against the obvious slow computation, and the m-fit check."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tasksup import TasksupError, get_task, load_model
from tasksup.cli import app
from tasksup.decoding import PromptState, sample_outputs
from tasksup.runner import run_config
from tasksup.tasks import check_fits
from tasksup.testing import ARCHITECTURES, save_tiny_model
from tasksup.vectors import Patch, last_token_states, lone_queries, patching, task_vectors
from tasksup.vectors.extract import task_prompts
from tasksup.vectors.select import top1_outputs

ROOT = Path(__file__).resolve().parents[1]
TASK = get_task("copy_op1")


@pytest.fixture(scope="module")
def lms(tmp_path_factory):
    root = tmp_path_factory.mktemp("accuracy_models")
    return {arch: load_model(str(save_tiny_model(root / arch, arch, layers=2)), device="cpu", batch_size=4)
            for arch in ARCHITECTURES}


def queries() -> list[tuple[str, str]]:
    """Lone queries and prompts with examples: rows of different lengths in every batch."""
    prompts = [(p.text, p.answers[0]) for p in task_prompts(TASK, 3, 2, seed=0, task_index=0)]
    return lone_queries(TASK, 7, seed=0) + prompts


def slow_top1(lm, qs, patches, max_tokens) -> list[str]:
    """One exact best-first search per query (what layer selection did before)."""
    with patching(lm.model, patches):
        tops = [lm.top_outputs(q, k=1, stop="\n", max_tokens=max_tokens) for q, _ in qs]
    return [t[0][0] if t else "" for t in tops]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_exact_accuracy_is_the_exact_top1(lms, arch):
    lm, qs = lms[arch], queries()
    vector = last_token_states(lm, ["55@66="])[0, 1] * 2
    for patches in ([], [Patch(1, vector)]):
        fast = top1_outputs(lm, qs, patches, "\n", max_tokens=3)
        assert fast.texts == slow_top1(lm, qs, patches, 3) and fast.undecided == 0
        assert top1_outputs(lm, qs, patches, "\n", 3, max_nodes=0).undecided > 0  # some rows were searched


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_greedy_accuracy_is_plain_greedy_decoding(lms, arch):
    lm, qs = lms[arch], queries()
    vector = last_token_states(lm, ["55@66="])[0, 1] * 2
    with patching(lm.model, [Patch(1, vector)]):
        slow = [sample_outputs(PromptState(lm, q, "\n", 3), 1, temperature=0.0).outputs[0] or "" for q, _ in qs]
    assert top1_outputs(lm, qs, [Patch(1, vector)], "\n", 3, "greedy").texts == slow


def test_a_search_over_budget_is_undecided_and_keeps_the_greedy_output(lms):
    lm, qs = lms["gpt2"], queries()
    bounded = top1_outputs(lm, qs, (), "\n", 3, max_nodes=0)
    assert bounded.undecided > 0
    assert bounded.texts == top1_outputs(lm, qs, (), "\n", 3, "greedy").texts


def test_exact_accuracy_on_a_trained_checkpoint():
    """copy_add-small with its task vectors patched in: flat and peaked outputs, greedy ones that never end."""
    lm = load_model(str(ROOT / "checkpoints" / "copy_add-small"), device="cpu")
    v = task_vectors(lm, [TASK], n_prompts=8, n_examples=12, seed=0)[TASK.name]
    qs = lone_queries(TASK, 24, seed=0)
    for patches in ([], [Patch(1, v[1])], [Patch(3, v[3])]):
        fast = top1_outputs(lm, qs, patches, "\n", max_tokens=6, batch_size=16)
        assert fast.texts == slow_top1(lm, qs, patches, 6) and fast.undecided == 0


# -- does m fit the context -------------------------------------------------------------------


@pytest.fixture(scope="module")
def short_model(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("short") / "gpt2", "gpt2", layers=2, context=128)


def largest_m(message: str) -> int:
    return int(re.search(r"the largest m that fits is (\d+)", message).group(1))


def test_the_error_names_the_largest_m_that_fits(short_model):
    """The check counts the prompts that will run: m fits exactly when its longest prompt with the decoding budget
    fits, and the error names the largest such m."""
    lm = load_model(str(short_model), device="cpu")

    def prompts(k):
        return ((p.text, p.answers) for p in task_prompts(TASK, 20, k, seed=0, task_index=0))

    def fits(k):  # slow and obvious: every prompt, encoded whole
        return max(len(lm.encode(p.text)) + max(6, *(len(lm.encode_bare(a)) for a in p.answers))
                   for p in task_prompts(TASK, 20, k, seed=0, task_index=0)) <= 128

    with pytest.raises(TasksupError, match=r"n_examples=60 needs \d+ tokens but .*'s context is 128") as e:
        check_fits(lm, prompts, 60, generate=6)
    m = largest_m(str(e.value))
    assert fits(m) and not fits(m + 1)
    check_fits(lm, prompts, m, generate=6)
    with pytest.raises(TasksupError, match=f"the largest m that fits is {m} "):
        check_fits(lm, prompts, m + 1, generate=6)


def test_cli_and_run_stop_before_computing(short_model, tmp_path):
    res = CliRunner().invoke(app, ["vectors", "layers", "--model", str(short_model), "--task", "copy_op1",
                                   "--no-progress"])
    assert res.exit_code == 2 and re.search(r"the largest m that fits is \d+ \(set --n-examples \d+\)", res.output)
    with pytest.raises(TasksupError, match=r"the largest m that fits is \d+ \(set --set n_examples=\d+\)"):
        run_config(ROOT / "configs" / "fig3_ret.yaml", model=str(short_model), out=tmp_path, progress=False,
                   overrides=["n_examples=500"])
    assert not (tmp_path / "results.jsonl").exists()


def test_the_papers_fig2a_fits_a_2048_context_on_the_real_gpt2_vocabulary(real_vocab_lm):
    """The check is on the prompts that run: Fig. 2a's m = 80 (configs/fig2_add_translate.yaml, 100 prompts)
    fits GPT-2's 2,048 tokens (a per-example bound claimed 2,510), and a context one token shorter than the longest
    prompt with its answer is refused."""
    from types import SimpleNamespace

    from tasksup.config import build_config, read_yaml
    from tasksup.experiments import mixture
    from tasksup.tasks import PromptBuilder, resolve_tasks

    lm = real_vocab_lm("gpt2")
    cfg = build_config(mixture.Config, read_yaml(ROOT / "configs" / "fig2_add_translate.yaml"), source="fig2a")
    builder = PromptBuilder(resolve_tasks(cfg.tasks), cfg.delimiter)

    def prompts(k):
        return [(p.text, p.answers) for i in range(cfg.n_prompts)
                for p in [mixture.build_prompt(dataclasses.replace(cfg, n_examples=k), builder, i)]]

    longest = max(len(lm.encode(t)) + max(len(lm.encode_bare(a)) for a in ans) for t, ans in prompts(80))
    assert cfg.n_examples == 80 and longest < 1600
    check_fits(SimpleNamespace(max_context=2048, tokenizer=lm.tokenizer, encode=lm.encode, name="gpt2"), prompts, 80)
    with pytest.raises(TasksupError, match="n_examples=80 needs .* the largest m that fits is 7[0-9] "):
        check_fits(SimpleNamespace(max_context=longest - 1, tokenizer=lm.tokenizer, encode=lm.encode, name="gpt2"),
                   prompts, 80)
