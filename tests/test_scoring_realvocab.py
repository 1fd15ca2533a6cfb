"""The scorer on the four real vocabularies (GPT-2, Llama-3, Qwen2 BPE; Llama-2 SentencePiece).

Tiny random models on real tokenizers: what is tested is the tokenization logic (joint vs separate,
merges across the prompt/answer boundary, SentencePiece's "▁"), against the slow definitions.
"""

import numpy as np
import pytest
from reference import in_context_logprob, separate_logprob, sequence_logprob

from tasksup import PromptBuilder, resolve_tasks
from tasksup.testing import REAL_VOCABS

pytestmark = pytest.mark.realvocab
RTOL = 1e-4
VOCABS = list(REAL_VOCABS)


def mixture_prompt(family: str, m: int, seed: int):
    return PromptBuilder(resolve_tasks(family)).build("uniform", m, np.random.default_rng(seed))


def rel_error(fast, slow):
    return np.abs(np.expm1(np.asarray(fast) - np.asarray(slow)))


@pytest.mark.parametrize("name", VOCABS)
def test_real_vocab_matches_definition(real_vocab_lm, name):
    """Mixture prompts and a boundary-merge prompt in one batch, both tokenization modes."""
    lm = real_vocab_lm(name)
    add = mixture_prompt("add_translate", 4, seed=1)
    country = mixture_prompt("country", 3, seed=2)
    # "abc " + "def": every one of the four tokenizers merges the space into the answer's token.
    prompts = [add.text, country.text, "Answer: abc "]
    answers = [add.answers, country.answers + ["Paris"], ["def", "de", "xyz", "d"]]
    plans = lm.plan(prompts, answers)
    assert plans[2].boundary_merge == [True] * 4  # tok(prompt) is not a prefix of tok(prompt + answer)
    for mode, reference in (("in_context", in_context_logprob), ("separate", separate_logprob)):
        fast = lm.answer_logprobs(prompts, answers, tokenization=mode)
        slow = np.array([[reference(lm, p, a) for a in row] for p, row in zip(prompts, answers)])
        assert rel_error(fast, slow).max() <= RTOL, mode
    for plan, p, row in zip(plans, prompts, answers):  # the recorded flags say what they claim
        assert plan.separate_differs == [lm.encode(p) + lm.encode_bare(a) != lm.encode(p + a) for a in row]


@pytest.mark.parametrize("name", VOCABS)
def test_boundary_merge_is_the_ratio_of_joint_probabilities(real_vocab_lm, name):
    """P(answer | prompt) = P(tok(p + a)) / P(tok(p)) when the prompt's last token merges into the answer."""
    lm = real_vocab_lm(name)
    prompt, answer = "The capital of France is Par", "is"
    prompts, answers = [prompt, "Answer: abc "], [[answer, "isian"], ["def", "defer"]]
    assert [p.boundary_merge for p in lm.plan(prompts, answers, terminator="\n")] == [[True, True]] * 2
    fast = lm.answer_logprobs(prompts, answers, terminator="\n")
    p_ids, joint = lm.encode(prompt), lm.encode(prompt + answer + "\n")
    slow = sequence_logprob(lm.model, joint) - sequence_logprob(lm.model, p_ids)
    assert rel_error(fast[0, 0], slow) <= RTOL
    slow_def = sequence_logprob(lm.model, lm.encode("Answer: abc def\n")) - sequence_logprob(lm.model, lm.encode("Answer: abc "))
    assert rel_error(fast[1, 0], slow_def) <= RTOL


def test_sentencepiece_separate_differs_for_174_and_paris(real_vocab_lm):
    """Llama-2: Eq. 3 literally scores a spurious "▁" before "174" and "▁Paris" instead of "Par"+"is"."""
    lm = real_vocab_lm("llama2")
    tok = lm.tokenizer
    prompts, answers = ["12+13->", "France->"], [["174"], ["Paris"]]
    assert tok.convert_ids_to_tokens(lm.encode_bare("174"))[0] == "▁"
    assert tok.convert_ids_to_tokens(lm.encode("France->Paris"))[-2:] == ["Par", "is"]
    plans = lm.plan(prompts, answers)
    assert [p.separate_differs for p in plans] == [[True], [True]]
    assert [p.boundary_merge for p in plans] == [[False], [False]]
    joint = lm.answer_logprobs(prompts, answers)[:, 0]
    separate = lm.answer_logprobs(prompts, answers, tokenization="separate")[:, 0]
    for i, (p, (a,)) in enumerate(zip(prompts, answers)):
        assert rel_error(joint[i], in_context_logprob(lm, p, a)) <= RTOL
        assert rel_error(separate[i], separate_logprob(lm, p, a)) <= RTOL
    assert np.all(np.abs(joint - separate) > 1e-3)  # genuinely different numbers


@pytest.mark.parametrize("name", ["gpt2", "llama3"])
def test_bpe_separate_agrees_after_arrow(real_vocab_lm, name):
    """Byte-level BPE after "->": tok(answer) alone is the joint tokenization, so both modes agree."""
    lm = real_vocab_lm(name)
    plans = lm.plan(["12+13->", "France->"], [["174"], ["Paris"]])
    assert [p.separate_differs for p in plans] == [[False], [False]]
    a = lm.answer_logprobs(["12+13->", "France->"], [["174"], ["Paris"]])
    b = lm.answer_logprobs(["12+13->", "France->"], [["174"], ["Paris"]], tokenization="separate")
    assert np.allclose(a, b, rtol=0, atol=1e-6)
