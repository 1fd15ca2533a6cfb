"""Decoding from superposition: exact decode vs enumeration, sampling vs exact probabilities, greedy and
Superposed Decoding vs uncached references, query parsing, and `tasksup decode` end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from reference import in_context_logprob, next_token_logprobs
from typer.testing import CliRunner

from tasksup import TasksupError, load_model
from tasksup.cli import app
from tasksup.decoding import PromptState, greedy_output, sample_outputs, superposed_decode, task_mixture
from tasksup.decoding.superposed import mixed_embedding
from tasksup.tasks import PromptBuilder, all_tasks, get_input_space, parse_query, query_answers, resolve_tasks
from tasksup.testing import save_tiny_model, word_level_tokenizer

RTOL = 1e-4
# Merged tokens ("ab", "\n\n") that the char-level encoder never produces but the model can
# generate, so that several token paths decode to the same string.
VOCAB = ["<pad>", "<unk>", "<eos>", "a", "b", "\n", "ab", "\n\n"]
SPECIAL = {"<pad>", "<unk>", "<eos>"}
PROMPT = "ab\nba\naa\nb"
MAX_TOKENS = 4
FAILURE_PROBABILITY = 1e-6


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def small_lm(request, tmp_path_factory):
    path = save_tiny_model(tmp_path_factory.mktemp("decvocab") / request.param, request.param, word_level_tokenizer(VOCAB))
    return load_model(str(path), device="cpu")


@torch.inference_mode()
def enumerate_paths(lm, prompt: str, max_tokens: int, temperature: float = 1.0):
    """Every token path up to max_tokens (slow: one full forward per node, float64).

    Returns ({output: [log-probabilities of its complete paths]}, probability of no output).
    Text is decoded here from VOCAB, independently of the tokenizer: special tokens add nothing;
    a path ends at its first EOS or at the first token that puts "\\n" in its text.
    """
    ids = lm.encode(prompt)
    outputs: dict[str, list[float]] = {}
    frontier, incomplete = [((), "", 0.0)], 0.0
    for depth in range(max_tokens):
        grown = []
        for path, text, logp in frontier:
            logits = lm.model(torch.tensor([ids + list(path)])).logits[0, -1].double()
            dist = torch.log_softmax(logits / temperature, -1)
            for t, piece in enumerate(VOCAB):
                lp = logp + float(dist[t])
                if piece == "<eos>":
                    outputs.setdefault(text, []).append(lp)
                    continue
                new = text + ("" if piece in SPECIAL else piece)
                if "\n" in new:
                    outputs.setdefault(new.split("\n", 1)[0], []).append(lp)
                elif depth + 1 < max_tokens:
                    grown.append((path + (t,), new, lp))
                else:
                    incomplete += math.exp(lp)
        frontier = grown
    return outputs, incomplete


def test_decode_equals_exhaustive_enumeration(small_lm):
    outputs, _ = enumerate_paths(small_lm, PROMPT, MAX_TOKENS)
    best = sorted(((o, math.exp(max(lps))) for o, lps in outputs.items()), key=lambda x: -x[1])
    k = 6
    answers = {"t1": best[1][0], "t4": best[4][0], "never": "bbbbbbbb"}
    decoded = small_lm.decode_superposed(PROMPT, k=k, stop="\n", max_tokens=MAX_TOKENS, tasks=answers)
    assert [d.output for d in decoded] == [o for o, _ in best[:k]]
    np.testing.assert_allclose([d.probability for d in decoded], [p for _, p in best[:k]], rtol=RTOL)
    assert [d.task for d in decoded] == [None, "t1", None, None, "t4", None]


def test_shared_answer_is_attributed_to_every_task(small_lm):
    top = [o for o, _ in small_lm.top_outputs(PROMPT, k=4, stop="\n", max_tokens=MAX_TOKENS)]
    shared = next(o for o in top if o)  # task answers are never empty
    decoded = small_lm.decode_superposed(PROMPT, k=4, max_tokens=MAX_TOKENS, tasks={"x": shared, "y": shared})
    assert [d.task for d in decoded] == ["x|y" if o == shared else None for o in top]


def test_task_mixture_is_eq3_normalised(small_lm):
    answers = {"t1": "a", "t2": "ab", "t3": "bab"}
    mix = task_mixture(small_lm, PROMPT, answers, "\n")
    expected = np.exp([in_context_logprob(small_lm, PROMPT, a, "\n") for a in answers.values()])
    np.testing.assert_allclose([m.probability for m in mix], expected, rtol=RTOL)
    np.testing.assert_allclose([m.share for m in mix], expected / expected.sum(), rtol=RTOL)


def hoeffding_tolerance(n: int, categories: int, failure: float = FAILURE_PROBABILITY) -> float:
    """eps with P(max_c |freq_c - p_c| >= eps) <= failure for n i.i.d. draws.

    Each category's frequency is a mean of n Bernoulli(p_c) variables, so Hoeffding gives
    P(|freq_c - p_c| >= eps) <= 2 exp(-2 n eps^2); a union bound over the categories multiplies by
    their number. Solving 2 C exp(-2 n eps^2) = failure for eps.
    """
    return math.sqrt(math.log(2 * categories / failure) / (2 * n))


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_sampling_frequencies_converge_to_exact_probabilities(small_lm, temperature):
    outputs, incomplete = enumerate_paths(small_lm, PROMPT, MAX_TOKENS, temperature)
    exact = {o: sum(math.exp(lp) for lp in lps) for o, lps in outputs.items()}  # sampling: every path counts
    exact[None] = incomplete
    assert sum(exact.values()) == pytest.approx(1.0, abs=1e-9)
    n = 20_000
    state = PromptState(small_lm, PROMPT, "\n", MAX_TOKENS)
    gen = sample_outputs(state, n, temperature, np.random.default_rng(1234), chunk=2_000)
    counts: dict = {}
    for o in gen.outputs:
        counts[o] = counts.get(o, 0) + 1
    assert set(counts) <= set(exact)
    eps = hoeffding_tolerance(n, len(exact))
    assert eps < 0.025
    worst = max(abs(counts.get(o, 0) / n - p) for o, p in exact.items())
    assert worst < eps, (worst, eps)
    # every decode fed one token fewer than it generated: the cost is what was computed
    assert gen.forward_tokens == sum(len(p) - 1 for p in gen.paths)


@torch.inference_mode()
def slow_greedy(lm, prompt: str, stop: str, max_tokens: int) -> str | None:
    ids, path = lm.encode(prompt), []
    for _ in range(max_tokens):
        path.append(int(next_token_logprobs(lm.model, ids + path).argmax()))
        if path[-1] in lm.eos_ids:
            return lm.tokenizer.decode(path[:-1], skip_special_tokens=True)
        text = lm.tokenizer.decode(path, skip_special_tokens=True)
        if stop in text:
            return text.split(stop, 1)[0]
    return None


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2", "gpt_neox"])
def test_greedy_matches_uncached_argmax(tiny_lm, arch):
    lm = tiny_lm(arch)
    for prompt in ("12->13\n40->41\n7", "cat->c\ndog->"):
        assert greedy_output(lm, prompt, "\n", 12).outputs == [slow_greedy(lm, prompt, "\n", 12)]


def test_greedy_matches_uncached_argmax_on_merged_tokens(small_lm):
    assert greedy_output(small_lm, PROMPT, "\n", MAX_TOKENS).outputs == [slow_greedy(small_lm, PROMPT, "\n", MAX_TOKENS)]


def test_one_row_decodes_reuse_the_prompt_cache_correctly(small_lm):
    """fork(1) cuts one working cache back to the prompt: decodes must not see each other's tokens."""
    state = PromptState(small_lm, PROMPT, "\n", MAX_TOKENS)
    first = sample_outputs(state, 6, 1.0, np.random.default_rng(5), chunk=1)
    again = sample_outputs(state, 6, 1.0, np.random.default_rng(5), chunk=1)
    fresh = sample_outputs(PromptState(small_lm, PROMPT, "\n", MAX_TOKENS), 6, 1.0, np.random.default_rng(5), chunk=1)
    assert first.paths == again.paths == fresh.paths
    assert sample_outputs(state, 1, 0.0).outputs == [slow_greedy(small_lm, PROMPT, "\n", MAX_TOKENS)]


@torch.inference_mode()
def slow_superposed(lm, prompt: str, k: int, max_tokens: int) -> list[tuple[str, float]]:
    """The same algorithm without a KV cache: the whole embedding sequence re-run every step."""
    embed = lm.model.get_input_embeddings()
    seq = embed(torch.tensor([lm.encode(prompt)]))
    drafts, finished = [((), "", 0.0)], {}
    for _ in range(max_tokens):
        logp = torch.log_softmax(lm.model(inputs_embeds=seq).logits[0, -1].double(), -1)
        cands = sorted(((s + float(logp[t]), path + (t,), text, VOCAB[t]) for path, text, s in drafts
                        for t in range(len(VOCAB))), key=lambda c: -c[0])[:2 * k]
        drafts = []
        for s, path, text, piece in cands:
            new = text + ("" if piece in SPECIAL else piece)
            if piece == "<eos>" or "\n" in new:
                out = text if piece == "<eos>" else new.split("\n", 1)[0]
                finished[out] = max(finished.get(out, -math.inf), s)
            elif len(drafts) < k and len(path) < max_tokens:
                drafts.append((path, new, s))
        kth = sorted(finished.values(), reverse=True)[k - 1] if len(finished) >= k else -math.inf
        if not drafts or drafts[0][2] < kth:
            break
        mix = mixed_embedding(embed, [p[-1] for p, _, _ in drafts], [s for _, _, s in drafts])
        seq = torch.cat([seq, mix], dim=1)
    return sorted(((o, math.exp(s)) for o, s in finished.items()), key=lambda x: -x[1])[:k]


@pytest.mark.parametrize("k", [2, 4])
def test_superposed_decoding_matches_uncached_reference(small_lm, k):
    state = PromptState(small_lm, PROMPT, "\n", 6)
    fast = superposed_decode(state, k)
    slow = slow_superposed(small_lm, PROMPT, k, 6)
    assert [o for o, _ in fast.outputs] == [o for o, _ in slow]
    np.testing.assert_allclose([p for _, p in fast.outputs], [p for _, p in slow], rtol=RTOL)
    assert fast.outputs and fast.forward_tokens <= 5  # one step per token after the first, whatever k


def test_mixed_embedding_of_one_draft_is_its_token_embedding(small_lm):
    embed = small_lm.model.get_input_embeddings()
    mix = mixed_embedding(embed, [3, 4], [0.0, -math.inf])
    torch.testing.assert_close(mix[0, 0], embed.weight[3])


# -- query parsing -----------------------------------------------------------------------------


def test_query_parsing_round_trips_every_registered_input_space():
    rng = np.random.default_rng(0)
    spaces = {t.inputs.name: t.inputs for t in all_tasks().values()}
    for space in spaces.values():
        for _ in range(20):
            x = space.sample(rng)
            assert parse_query(space, space.format(x)) == x


def test_query_answers_of_the_papers_example():
    assert query_answers(resolve_tasks("add_translate"), "91+83->") == [
        "174", "one hundred and seventy-four", "cent soixante-quatorze", "ciento setenta y cuatro"]


@pytest.mark.parametrize("text", ["91*83->", "x+83->", "091+83->", "91+83"])
def test_query_that_does_not_match_is_a_one_line_error(text):
    with pytest.raises(TasksupError, match="does not match"):
        parse_query(get_input_space("pair_arrow"), text)


# -- the command -------------------------------------------------------------------------------


def invoke(*args):
    return CliRunner().invoke(app, ["decode", *args])


def test_cli_decode_end_to_end(tiny_model_dirs, tmp_path):
    model = str(tiny_model_dirs["gpt2"])
    prompt = "12+34->46\n20+22->forty-two\n91+83->"
    (tmp_path / "p.txt").write_text(prompt + "\n")  # the newline an editor adds is dropped
    result = invoke("--model", model, "--prompt-file", str(tmp_path / "p.txt"), "--tasks", "add_translate",
                    "--k", "3", "--max-tokens", "4", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    lm = load_model(model, device="cpu")
    top = lm.top_outputs(prompt, k=3, stop="\n", max_tokens=4)
    assert [(o["output"], o["probability"]) for o in report["outputs"]] == [(o, p) for o, p in top]
    assert report["query"] == "91+83->"
    assert [t["answer"] for t in report["tasks"]] == ["174", "one hundred and seventy-four",
                                                      "cent soixante-quatorze", "ciento setenta y cuatro"]
    lp = np.array([in_context_logprob(lm, prompt, t["answer"], "\n") for t in report["tasks"]])
    np.testing.assert_allclose([t["share"] for t in report["tasks"]], np.exp(lp) / np.exp(lp).sum(), rtol=RTOL)
    assert report["cost"]["prompt_tokens"] == len(lm.encode(prompt)) and report["cost"]["forward_tokens"] > 0
    assert "task mixture" in result.output


def test_cli_decode_says_when_no_task_is_done():
    """ret-small has never seen a translation: the task answers hold ~1e-90 together, so no share is printed
    (a share of 1.0 from P = 1e-90 would mean nothing); translate-small on the same prompt does them."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    prompt = str(root / "configs" / "prompts" / "translate.txt")
    result = invoke("--model", str(root / "checkpoints" / "ret-small"), "--prompt-file", prompt, "--tasks", "translate")
    assert result.exit_code == 0 and "task mixture: none (the task answers hold" in result.output
    assert not any(line.split()[1:2] and line.split()[1].startswith(("0.", "1.")) for line in result.output.splitlines()
                   if line.startswith("    to_"))
    done = invoke("--model", str(root / "checkpoints" / "translate-small"), "--prompt-file", prompt, "--tasks", "translate")
    assert done.exit_code == 0 and "task mixture (Eq. 3" in done.output


@pytest.mark.parametrize("content, args, message", [
    ("12+34->46\n91*83->", ["--tasks", "add_translate"], "does not match"),
    ("12+34->46\n91+83->", ["--tasks", "no_such_family"], "unknown task or family"),
    ("12+34->46\n91+83->", ["--k", "0"], "--k must be >= 1"),
    ("", [], "is empty"),
])
def test_cli_decode_bad_input_is_one_line(tiny_model_dirs, tmp_path, content, args, message):
    (tmp_path / "p.txt").write_text(content)
    result = invoke("--model", str(tiny_model_dirs["gpt2"]), "--prompt-file", str(tmp_path / "p.txt"), *args)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.startswith("tasksup: error")]
    assert len(lines) == 1 and message in lines[0]


def test_cli_decode_missing_prompt_file(tiny_model_dirs, tmp_path):
    result = invoke("--model", str(tiny_model_dirs["gpt2"]), "--prompt-file", str(tmp_path / "nope.txt"))
    assert result.exit_code == 2 and "does not exist" in result.output


BENCH_ARGS = ["--tasks", "copy_add", "--n-examples", "3", "--max-tokens", "4", "--max-samples", "5", "--no-progress"]


def bench(model: str, out, *args):
    return CliRunner().invoke(app, ["bench", "decode", "--model", model, *BENCH_ARGS, "--out", str(out), *args])


def test_cli_bench_decode_end_to_end(tiny_model_dirs, tmp_path):
    model = str(tiny_model_dirs["gpt2"])
    out = tmp_path / "bench"
    result = bench(model, out, "--n-prompts", "1", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary == json.loads((out / "summary.json").read_text())
    methods = summary["methods"]
    assert set(methods) == {"best_first", "greedy_single_task", "greedy_mixture", "sampling_until_k",
                            "sampling_same_budget", "superposed", "superposed_wide"}
    [record] = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    lm = load_model(model, device="cpu")
    prompt = PromptBuilder(resolve_tasks("copy_add")).build("uniform", 3, np.random.default_rng([0, 0]), terminator="\n")
    found = lm.search(prompt.text, 3, "\n", 4)
    assert record["answers"] == prompt.answers and record["prompt"] == prompt.text
    assert record["methods"]["best_first"]["outputs"] == [o for o, _ in found.outputs]
    assert methods["best_first"]["forward_tokens"] == found.forward_tokens
    assert methods["sampling_same_budget"]["forward_tokens"] <= found.forward_tokens
    assert methods["greedy_single_task"]["prompt_tokens"] > 2 * methods["best_first"]["prompt_tokens"]  # K passes
    assert methods["superposed"]["forward_tokens"] <= 3  # one step per generated token after the first
    assert all(len(row["outputs"]) <= 3 for row in record["methods"].values())  # k outputs at most, for all
    walls = {m: row["wall_s"] for m, row in record["methods"].items()}  # one prompt: ratios of its wall times
    for m, row in methods.items():
        assert row["wall_vs_best_first"] == pytest.approx(walls[m] / walls["best_first"])
    assert "(a) K greedy decodes of single-task prompts" in result.output


def test_cli_bench_decode_resumes(tiny_model_dirs, tmp_path):
    model = str(tiny_model_dirs["gpt2"])
    out = tmp_path / "bench"
    assert bench(model, out, "--n-prompts", "1").exit_code == 0
    first = (out / "results.jsonl").read_text()
    result = bench(model, out, "--n-prompts", "2", "--json")  # more prompts: only the new one is computed
    assert result.exit_code == 0, result.output
    lines = (out / "results.jsonl").read_text().splitlines()
    assert lines[0] + "\n" == first and [json.loads(x)["index"] for x in lines] == [0, 1]
    assert json.loads(result.output.strip().splitlines()[-1])["n_prompts"] == 2
    changed = bench(model, out, "--n-prompts", "2", "--seed", "1")
    assert changed.exit_code == 2 and "different config" in changed.output


@pytest.mark.parametrize("args, message", [
    (["--n-prompts", "0"], "--n-prompts must be >= 1"),
    (["--tasks", "no_such_family"], "unknown task or family"),
    (["--k", "0"], "--k must be >= 1"),
    (["--n-examples", "1"], "too small"),
])
def test_cli_bench_decode_bad_input_is_one_line(tiny_model_dirs, tmp_path, args, message):
    result = bench(str(tiny_model_dirs["gpt2"]), tmp_path / "bench", *args)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.startswith("tasksup: error")]
    assert len(lines) == 1 and message in lines[0], result.output
    assert not (tmp_path / "bench").exists()  # refused before any work
