"""The scorer (KV cache, batched answers, left-padded prompt batches) against one full forward per answer."""

import numpy as np
import pytest
from reference import in_context_logprob, separate_logprob

from tasksup import TasksupError, load_model
from tasksup.testing import ARCHITECTURES, save_tiny_model

RTOL = 1e-4  # relative error allowed in probability

# Prompts of very different lengths (5 to ~700 characters, one token each) in ONE batch, with
# answers of different lengths: exercises left padding, position ids and the per-row masks.
PROMPTS = [
    "1+2->",
    "".join(f"{a}+{b}->{a + b}\n" for a, b in [(31, 45), (12, 13), (50, 27)] * 20) + "44+44->",
    "ab\ncd\nx",
]
ANSWERS = [["3", "three", "tres"], ["88", "eighty-eight", "x"], ["y", "yz", "zzz\n"]]


def rel_error(fast_logprobs, slow_logprobs):
    """|P_fast - P_slow| / P_slow, computed in log space so tiny probabilities keep their precision."""
    return np.abs(np.expm1(np.asarray(fast_logprobs) - np.asarray(slow_logprobs)))


def slow(fn, lm, prompts, answers, terminator=None):
    return np.array([[fn(lm, p, a, terminator) for a in row] for p, row in zip(prompts, answers)])


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("terminator", [None, "\n"])
def test_in_context_matches_full_forward(tiny_lm, arch, terminator):
    lm = tiny_lm(arch)
    fast = lm.answer_logprobs(PROMPTS, ANSWERS, terminator=terminator)
    assert fast.shape == (3, 3) and fast.dtype == np.float64
    assert rel_error(fast, slow(in_context_logprob, lm, PROMPTS, ANSWERS, terminator)).max() <= RTOL


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox"])
@pytest.mark.parametrize("prompts", [["7", "ab\ncd\nx"], ["7", "8"]], ids=["one-token-and-longer", "all-one-token"])
def test_one_token_prompts(tiny_lm, arch, prompts):
    """A one-token prefix runs nothing before its answers' sequence (no cache at all when every prefix is one)."""
    lm = tiny_lm(arch)
    assert len(lm.encode(prompts[0])) == 1
    answers = [["3", "three", "x\n"]] * len(prompts)
    fast = lm.answer_logprobs(prompts, answers)
    assert rel_error(fast, slow(in_context_logprob, lm, prompts, answers)).max() <= RTOL


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_separate_matches_literal_eq3(tiny_lm, arch):
    lm = tiny_lm(arch)
    fast = lm.answer_logprobs(PROMPTS, ANSWERS, terminator="\n", tokenization="separate")
    assert rel_error(fast, slow(separate_logprob, lm, PROMPTS, ANSWERS, "\n")).max() <= RTOL


def test_batch_size_and_flat_answers(tiny_lm):
    """Uneven batches give the same numbers; a flat answer list is shared by every prompt."""
    lm = tiny_lm("llama")
    full = lm.answer_logprobs(PROMPTS, ANSWERS)
    assert np.allclose(lm.answer_logprobs(PROMPTS, ANSWERS, batch_size=2), full, rtol=0, atol=1e-5)
    shared = ["3", "eighty-eight"]
    flat = lm.answer_logprobs(PROMPTS, shared)
    assert flat.shape == (3, 2)
    assert rel_error(flat, slow(in_context_logprob, lm, PROMPTS, [shared] * 3)).max() <= RTOL
    one = lm.answer_probs(PROMPTS[1], shared)  # a single prompt string
    assert one.shape == (1, 2) and np.allclose(one[0], np.exp(flat[1]), rtol=1e-6)


def test_bfloat16_option_is_close(tiny_model_dirs, tiny_lm):
    lm16 = load_model(str(tiny_model_dirs["qwen2"]), dtype="bfloat16", device="cpu")
    assert lm16.identity()["dtype"] == "bfloat16"
    exact = tiny_lm("qwen2").answer_logprobs(PROMPTS[:1], ANSWERS[:1])
    assert np.abs(lm16.answer_logprobs(PROMPTS[:1], ANSWERS[:1]) - exact).max() < 0.5


@pytest.mark.parametrize("answers, message", [
    (["3", ""], "non-empty"),
    ([], "answer"),
])
def test_bad_answers(tiny_lm, answers, message):
    with pytest.raises(TasksupError, match=message):
        tiny_lm("gpt2").answer_probs("1+2->", answers)


def test_unknown_tokenization(tiny_lm):
    with pytest.raises(TasksupError, match="tokenization"):
        tiny_lm("gpt2").answer_probs("1+2->", ["3"], tokenization="joint")


def test_prompt_longer_than_context(tmp_path):
    lm = load_model(str(save_tiny_model(tmp_path / "short", "gpt2", context=32)), device="cpu")
    assert lm.max_context == 32
    assert lm.answer_probs("x" * 20, ["y" * 12]).shape == (1, 1)  # 32 tokens: fits exactly
    with pytest.raises(TasksupError, match="context of 32"):
        lm.answer_probs("x" * 30, ["yyy"])
    with pytest.raises(TasksupError, match="context of 32"):
        lm.top_outputs("x" * 30, k=2, max_tokens=8)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_max_context_of_each_config_class(tmp_path, arch):
    lm = load_model(str(save_tiny_model(tmp_path / arch, arch, context=77)), device="cpu")
    assert lm.max_context == 77


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_saved_char_tokenizer_round_trips(tiny_lm, arch):
    """transformers 5 may rebuild a tokenizer from the model type (Qwen2); ours must come back as saved."""
    lm = tiny_lm(arch)
    text = "12+34->forty-six\nFrance->Paris"
    assert len(lm.encode(text)) == len(text)
    assert lm.tokenizer.decode(lm.encode(text)) == text
