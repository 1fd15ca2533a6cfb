"""Exact top-k complete outputs: against exhaustive enumeration, and against the scorer on real vocabularies."""

import contextlib
import math

import numpy as np
import pytest
import torch
from reference import in_context_logprob, next_token_logprobs
from transformers.convert_slow_tokenizer import bytes_to_unicode

from tasksup import TasksupError, load_model, scoring
from tasksup.testing import save_tiny_model, word_level_tokenizer

RTOL = 1e-4
# A vocabulary small enough to enumerate every output: "0", "1", "\n", plus two merged tokens the
# char-level encoder never produces but the model can generate, so that different token paths
# decode to the same string ("01" vs "0"+"1"; "\n\n" ends an output like "\n" does).
TINY_VOCAB = ["<pad>", "<unk>", "<eos>", "0", "1", "\n", "01", "\n\n"]
PROMPT = "01\n10\n11\n0"


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def tiny_vocab_lm(request, tmp_path_factory):
    path = save_tiny_model(tmp_path_factory.mktemp("tinyvocab") / request.param, request.param, word_level_tokenizer(TINY_VOCAB))
    return load_model(str(path), device="cpu")


def enumerate_outputs(lm, prompt: str, stop, max_tokens: int) -> dict[str, float]:
    """Every token path up to max_tokens, one slow full forward per node; per string its best path.

    A path is complete at its first EOS (output: the text before it) or when its text first
    contains ``stop`` (output: the text before the stop); the string's probability is that of its
    most probable complete path (the rule documented in scoring.best_first_outputs).
    """
    tok, prompt_ids = lm.tokenizer, lm.encode(prompt)
    best: dict[str, float] = {}
    frontier = [((), 0.0)]
    for _ in range(max_tokens):
        grown = []
        for path, logp in frontier:
            dist = next_token_logprobs(lm.model, prompt_ids + list(path))
            for t in range(len(tok)):
                lp = logp + float(dist[t])
                text = tok.decode(list(path) + [t], skip_special_tokens=True)
                if t in lm.eos_ids:
                    out = tok.decode(list(path), skip_special_tokens=True)
                elif stop is not None and stop in text:
                    out = text.split(stop, 1)[0]
                else:
                    grown.append((path + (t,), lp))
                    continue
                best[out] = max(best.get(out, -math.inf), lp)
        frontier = grown
    return {s: math.exp(lp) for s, lp in sorted(best.items(), key=lambda kv: -kv[1])}


@pytest.mark.parametrize("batch", [1, 3, 8])
@pytest.mark.parametrize("stop, max_tokens, chunk", [("\n", 4, None), ("\n", 4, 2), (None, 3, None)])
def test_top_outputs_equal_exhaustive_enumeration(tiny_vocab_lm, monkeypatch, stop, max_tokens, chunk, batch):
    """Every search batch (nodes expanded per forward) gives the enumeration's outputs."""
    monkeypatch.setattr(scoring, "SEARCH_BATCH", batch)
    if chunk:  # keep only 2 children per node: exercises recomputing the next window of children
        monkeypatch.setattr(scoring, "CHILD_CHUNK", chunk)
    exhaustive = enumerate_outputs(tiny_vocab_lm, PROMPT, stop, max_tokens)
    k = 8
    found = tiny_vocab_lm.search(PROMPT, k=k, stop=stop, max_tokens=max_tokens)
    expected = list(exhaustive.items())[:k]
    assert [s for s, _ in found.outputs] == [s for s, _ in expected]
    assert np.allclose([p for _, p in found.outputs], [p for _, p in expected], rtol=RTOL, atol=0)
    assert found.duplicates > 0  # some strings were reached by a second, less probable token path
    # best-first visits far fewer nodes than enumeration does (1 + 8 + 64 + 512 for 4 tokens)
    assert found.expansions < sum(len(TINY_VOCAB) ** d for d in range(max_tokens))


def test_top_outputs_bad_input(tiny_vocab_lm):
    with pytest.raises(TasksupError):
        tiny_vocab_lm.top_outputs(PROMPT, k=0)
    with pytest.raises(TasksupError):
        tiny_vocab_lm.top_outputs(PROMPT, max_tokens=0)


# --------------------------------------------------------------------------------------------
# Real vocabularies: each output's probability is that of its most probable token path, and
# equals answer_probs(..., terminator=stop) whenever that path is the canonical tokenization.

def token_bytes(tokenizer, spm: bool) -> list[bytes]:
    """What each token adds to the decoded text (special tokens: nothing, as skip_special_tokens)."""
    special = {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    byte_of = {c: b for b, c in bytes_to_unicode().items()}
    out = []
    for i, piece in enumerate(pieces):
        if i in special or piece is None:
            out.append(b"")
        elif spm and piece.startswith("<0x") and piece.endswith(">") and len(piece) == 6:
            out.append(bytes([int(piece[3:5], 16)]))
        elif spm:
            out.append(piece.replace("▁", " ").encode())
        else:
            out.append(bytes(byte_of[c] for c in piece))
    return out


def best_path_logprob(lm, table, prompt_ids, output: str, stop: str, max_tokens: int):
    """max over token paths completing as ``output`` of log P(path), by branch and bound; and that path."""
    done, target = output.encode(), (output + stop).encode()
    best, best_path = -math.inf, None

    def visit(path, text, logp):
        nonlocal best, best_path
        dist = logp + next_token_logprobs(lm.model, prompt_ids + list(path)).numpy()
        candidates = np.flatnonzero(dist > best)
        for t in candidates[np.argsort(-dist[candidates])]:  # most probable first: the bound tightens fast
            lp = float(dist[t])
            if lp <= best:
                continue
            grown = text + table[t]
            if (t in lm.eos_ids and text == done) or (t not in lm.eos_ids and grown.startswith(target)):
                best, best_path = lp, path + (t,)
            elif t not in lm.eos_ids and done.startswith(grown) and len(path) + 1 < max_tokens:
                visit(path + (t,), grown, lp)

    visit((), b"", 0.0)
    return best, best_path


@contextlib.contextmanager
def favouring(lm, strings, bonus=12.0):
    """Add ``bonus`` to the logits of the tokens of ``strings`` (and EOS), via a bias on the output head.

    A random model spreads its mass over the whole vocabulary, which makes an exact search expand
    tens of thousands of nodes; a trained model is peaked. The bias makes the random model peaked
    on a few tokens that spell the same strings in several ways ("174" vs "17"+"4", "\n\n" vs "\n").
    """
    ids = sorted({t for s in strings for t in lm.encode_bare(s)} | lm.eos_ids)
    head = lm.model.get_output_embeddings()
    bias = torch.zeros(head.weight.shape[0])
    bias[ids] = bonus
    head.bias = torch.nn.Parameter(bias)
    try:
        yield
    finally:
        head.bias = None


@pytest.mark.realvocab
@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("name", ["gpt2", "llama3", "qwen2", "llama2"])
def test_top_outputs_on_real_vocab(real_vocab_lm, monkeypatch, name, batch):
    monkeypatch.setattr(scoring, "SEARCH_BATCH", batch)
    lm = real_vocab_lm(name)
    prompt, stop, max_tokens = "31+45->76\n12+13->25\n44+44->", "\n", 3
    monkeypatch.setattr(scoring, "CHILD_CHUNK", 3)
    with favouring(lm, ["174\n", "17", "174", "4\n", "1", "7", "4", "\n\n", "Paris\n", " Paris", "Par", "is"]):
        check_outputs_on_real_vocab(lm, name, prompt, stop, max_tokens)


def check_outputs_on_real_vocab(lm, name, prompt, stop, max_tokens):
    found = lm.search(prompt, k=5, stop=stop, max_tokens=max_tokens)
    assert found.duplicates > 0
    probs = [p for _, p in found.outputs]
    assert len(found.outputs) == 5 and probs == sorted(probs, reverse=True)
    table = token_bytes(lm.tokenizer, spm=name == "llama2")
    prompt_ids = lm.encode(prompt)
    canonical_matches = 0
    for text, p in found.outputs:
        assert "\ufffd" not in text
        best, path = best_path_logprob(lm, table, prompt_ids, text, stop, max_tokens)
        assert abs(math.expm1(math.log(p) - best)) <= RTOL, text
        joint = lm.encode(prompt + text + stop)
        canonical = joint[:len(prompt_ids)] == prompt_ids and tuple(joint[len(prompt_ids):]) == path
        if canonical:
            assert abs(math.expm1(in_context_logprob(lm, prompt, text, stop) - best)) <= RTOL
            scored = lm.answer_probs(prompt, [text], terminator=stop)[0, 0]
            assert scored == pytest.approx(p, rel=RTOL)
            canonical_matches += 1
    assert canonical_matches >= 1


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2", "gpt_neox"])
def test_batched_search_equals_one_node_per_forward(tiny_lm, arch):
    """Batches of 2, 8 and 32 frontier nodes per forward give the one-node search's outputs (probabilities
    within 1e-6) on every architecture, in fewer forwards; a budget of expansions stops every batch alike."""
    lm = tiny_lm(arch)
    prompts = ["12+34->46\n20+22->42\n91+83->", "ab\ncd\nef\n", "7->8\n3->"]
    for prompt in prompts:
        ids = lm.encode(prompt)
        one = scoring.best_first_outputs(lm.model, lm.tokenizer, ids, 6, "\n", 4, lm.eos_ids, batch=1)
        for batch in (2, 8, 32):
            many = scoring.best_first_outputs(lm.model, lm.tokenizer, ids, 6, "\n", 4, lm.eos_ids, batch=batch)
            assert [o for o, _ in many.outputs] == [o for o, _ in one.outputs], (prompt, batch)
            assert np.allclose([p for _, p in many.outputs], [p for _, p in one.outputs], rtol=1e-6, atol=0)
            assert many.forwards <= one.forwards
        capped = [scoring.best_first_outputs(lm.model, lm.tokenizer, ids, 6, "\n", 4, lm.eos_ids, batch=b,
                                             max_expansions=3) for b in (1, 8)]
        for c in capped:  # whatever was certified before the budget ran out is the true top of the list
            assert [o for o, _ in c.outputs] == [o for o, _ in one.outputs][:len(c.outputs)]


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2", "gpt_neox"])
def test_searches_of_several_prompts_share_forwards_and_find_the_same(tiny_lm, arch):
    """Prompts of different lengths searched together (left-padded, one forward for all their nodes) find what
    each finds alone, one node per forward, in fewer forwards than the one-node searches took together."""
    lm = tiny_lm(arch)
    prompts = ["12+34->46\n20+22->42\n91+83->", "7->", "ab\ncd\nef\ngh\nij\n", "3+4->"]
    ids = [lm.encode(p) for p in prompts]
    alone = [scoring.best_first_outputs(lm.model, lm.tokenizer, row, 6, "\n", 4, lm.eos_ids, batch=1) for row in ids]
    together = scoring.best_first_many(lm.model, lm.tokenizer, ids, 6, "\n", 4, lm.eos_ids, lm.pad_id, batch=4)
    for one, many in zip(alone, together):
        assert [o for o, _ in many.outputs] == [o for o, _ in one.outputs]
        assert np.allclose([p for _, p in many.outputs], [p for _, p in one.outputs], rtol=1e-5, atol=0)
        assert many.expansions >= one.expansions and many.prompt_tokens == one.prompt_tokens
    assert together[0].forwards < sum(one.forwards for one in alone)


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2", "gpt_neox"])
def test_each_tree_node_sees_its_prompt_and_its_ancestors_only(tiny_lm, arch):
    """Nodes of two prompts' trees, in two branches each, expanded in one cache: each next-token distribution
    equals a plain forward of its prompt + path, and the prompts' own cache is as it was."""
    lm = tiny_lm(arch)
    ids = [lm.encode("12+34->46\n20+22->42\n91+83->"), lm.encode("7->")]
    state = scoring.prompts_pass(lm.model, ids, lm.pad_id)
    before = [(layer.keys.clone(), layer.values.clone()) for layer in state[1].layers]
    tree = scoring._SearchTree(lm.model, ids, lm.pad_id, prompt_state=state)
    a, b, c = lm.encode_bare("1"), lm.encode_bare("2"), lm.encode_bare("3")
    paths = [(a[-1],), (b[-1],), (c[-1],)]
    first, columns = tree.expand([0, 0, 1], paths, [(), (), ()])
    deeper = [paths[0] + (c[-1],), paths[1] + (a[-1],), paths[2] + (b[-1],), paths[2] + (c[-1],)]
    second, _ = tree.expand([0, 0, 1, 1], deeper, [(columns[0],), (columns[1],), (columns[2],), (columns[2],)])
    with torch.inference_mode():
        for owner, path, got in zip([0, 0, 1, 0, 0, 1, 1], paths + deeper, list(first) + list(second)):
            logits = lm.model(torch.tensor([ids[owner] + list(path)])).logits[0, -1]
            assert torch.allclose(got, torch.log_softmax(logits.float(), -1), atol=1e-5)
    for layer, (keys, values) in zip(state[1].layers, before):
        assert torch.equal(layer.keys, keys) and torch.equal(layer.values, values)


def test_a_cache_without_attention_keys_is_refused():
    with pytest.raises(TasksupError, match="cache of attention keys and values"):
        scoring._detached(object())