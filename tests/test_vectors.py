"""Task-vector mechanics on tiny random models of the four architectures (tasksup.vectors)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from tasksup import TasksupError, get_task, load_model
from tasksup.testing import ARCHITECTURES, save_tiny_model
from tasksup.vectors import (HeadPatch, Patch, capturing, capturing_heads, decoder_layers, interpolate,
                             last_token_states, lone_queries, patching, patching_heads, simplex_weights, task_vectors)
from tasksup.vectors.function_vectors import corrupted_text, head_contributions
from tasksup.vectors.hooks import attention_out_projs
from tasksup.vectors.lda import fit_lda, mixture_geometry

KNOWN_LAYERS = {"gpt2": "transformer.h", "llama": "model.layers", "qwen2": "model.layers", "gpt_neox": "gpt_neox.layers"}
ANSWERS = ["12", "34", "46"]
QUERY = "12@34="


@pytest.fixture(scope="module")
def lms(tmp_path_factory):
    root = tmp_path_factory.mktemp("vector_models")
    return {arch: load_model(str(save_tiny_model(root / arch, arch, layers=3)), device="cpu") for arch in ARCHITECTURES}


def n_hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def top(lm, text):
    return lm.top_outputs(text, k=2, stop="\n", max_tokens=2)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_decoder_layers_are_found(lms, arch):
    model = lms[arch].model
    layers = decoder_layers(model)
    expected = model
    for name in KNOWN_LAYERS[arch].split("."):
        expected = getattr(expected, name)
    assert layers is expected and len(layers) == 3
    assert len(attention_out_projs(model)) == 3


def test_generic_layer_search_and_clear_error():
    class Config:
        num_hidden_layers = 2

    class Unusual(torch.nn.Module):  # layers at a path no architecture uses
        def __init__(self):
            super().__init__()
            self.config = Config()
            self.stack = torch.nn.Sequential(torch.nn.ModuleList([torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)]))

    model = Unusual()
    assert decoder_layers(model) is model.stack[0]

    class NoLayers(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(2, 2)

    with pytest.raises(TasksupError, match="NoLayers"):
        decoder_layers(NoLayers())


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_patching_own_state_leaves_outputs_unchanged(lms, arch):
    lm = lms[arch]
    states = last_token_states(lm, [QUERY])[0]  # [n_layers, d]
    before, top_before = lm.answer_probs(QUERY, ANSWERS), top(lm, QUERY)
    for layer in range(states.shape[0]):
        with patching(lm.model, [Patch(layer, states[layer])]):
            after, top_after = lm.answer_probs(QUERY, ANSWERS), top(lm, QUERY)
        np.testing.assert_allclose(after, before, atol=1e-5, rtol=0)
        assert [o for o, _ in top_after] == [o for o, _ in top_before]
        np.testing.assert_allclose([p for _, p in top_after], [p for _, p in top_before], atol=1e-5, rtol=0)
    with patching(lm.model, [Patch(1, torch.zeros_like(states[1]), mode="add")]):
        np.testing.assert_allclose(lm.answer_probs(QUERY, ANSWERS), before, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_patching_a_different_vector_changes_outputs(lms, arch):
    lm = lms[arch]
    states = last_token_states(lm, [QUERY, "97@10="])
    before = lm.answer_logprobs(QUERY, ANSWERS)
    with patching(lm.model, [Patch(0, states[1, 0] * 3 + 1)]):
        after = lm.answer_logprobs(QUERY, ANSWERS)
    assert np.abs(after - before).max() > 1e-2


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_cached_patched_scoring_matches_a_full_uncached_pass(lms, arch):
    """answer_probs under a -1 patch (prompt pass + cached answers) = one plain pass over prompt+answer
    with the state replaced at the prompt's last absolute position, log-probabilities summed by hand."""
    lm = lms[arch]
    vector = last_token_states(lm, ["55@66="])[0, 1]
    with patching(lm.model, [Patch(1, vector)]):
        fast = lm.answer_logprobs(QUERY, ANSWERS)[0]
    prompt_ids = lm.encode(QUERY)
    slow = []
    for answer in ANSWERS:
        ids = lm.encode(QUERY + answer)
        assert ids[:len(prompt_ids)] == prompt_ids
        with patching(lm.model, [Patch(1, vector, position=len(prompt_ids) - 1)]), torch.no_grad():
            logits = lm.model(torch.tensor([ids]), use_cache=False).logits[0].double()
        logp = torch.log_softmax(logits, -1)
        slow.append(sum(float(logp[t - 1, ids[t]]) for t in range(len(prompt_ids), len(ids))))
    np.testing.assert_allclose(fast, slow, atol=1e-5)


def _hand_patched_logits(model, layer_module, ids: list[int], position: int, vector) -> torch.Tensor:
    """Logits [T, V] of one plain uncached forward whose residual stream after ``layer_module`` is
    overwritten at ``position`` by a hook written here (independent of tasksup.vectors.hooks)."""
    def overwrite(module, args, output):
        hidden = (output[0] if isinstance(output, tuple) else output).clone()
        hidden[:, position] = vector
        return (hidden,) + tuple(output[1:]) if isinstance(output, tuple) else hidden

    handle = layer_module.register_forward_hook(overwrite)
    try:
        with torch.no_grad():
            return model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].double()
    finally:
        handle.remove()


def _hand_patched_logprob(model, layer_module, ids: list[int], position: int, vector, n_prompt: int) -> float:
    """log P(ids[n_prompt:] | ids[:n_prompt]) under the hand-written patch."""
    logp = torch.log_softmax(_hand_patched_logits(model, layer_module, ids, position, vector), -1)
    return sum(float(logp[t - 1, ids[t]]) for t in range(n_prompt, len(ids)))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_cached_patching_matches_a_hand_edited_uncached_forward(lms, arch):
    """Patched answer scoring (prompt pass, then answers from the KV cache, two prompts left-padded in
    one batch) and the patched exact top-k search = a plain uncached forward over prompt + output with
    the hidden state replaced by hand at the prompt's last token, on every architecture."""
    lm = lms[arch]
    prompts = [QUERY, "97@10=12\n" + QUERY]
    layer = 1
    vector = last_token_states(lm, ["55@66="])[0, layer] * 2
    with patching(lm.model, [Patch(layer, vector)]):
        fast = lm.answer_logprobs(prompts, ANSWERS)
        tops = lm.top_outputs(prompts[1], k=3, stop="\n", max_tokens=3)
    target = decoder_layers(lm.model)[layer]
    for i, prompt in enumerate(prompts):
        n = len(lm.encode(prompt))
        slow = [_hand_patched_logprob(lm.model, target, lm.encode(prompt + a), n - 1, vector, n) for a in ANSWERS]
        np.testing.assert_allclose(fast[i], slow, atol=1e-5)
    n = len(lm.encode(prompts[1]))
    assert tops
    for text, prob in tops:  # an output ends with the stop string or an EOS token, whichever path is likelier
        endings = [lm.encode(prompts[1] + text + "\n")] + [lm.encode(prompts[1] + text) + [e] for e in lm.eos_ids]
        slow = max(_hand_patched_logprob(lm.model, target, ids, n - 1, vector, n) for ids in endings)
        np.testing.assert_allclose(np.log(prob), slow, atol=1e-5)
    unpatched = lm.answer_logprobs(prompts, ANSWERS)
    assert np.abs(unpatched - fast).max() > 1e-2  # the patch matters, so agreement above is not vacuous


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_pass_tracker_finds_the_cache_under_either_keyword(lms, arch):
    """The tracker reads the cache object, not a keyword: a continuation pass given its cache as
    ``cache=`` (transformers >= 5.24) or ``past_key_values=`` (older) is patched identically."""
    import warnings

    from tasksup.compat import cache_kwarg, output_cache

    lm = lms[arch]
    full = lm.encode(QUERY + "12")
    ids, n = torch.tensor([full]), len(lm.encode(QUERY))
    vector = last_token_states(lm, ["55@66="])[0, 0]
    results = []
    for keyword in dict.fromkeys([cache_kwarg(lm.model), "past_key_values"]):
        with patching(lm.model, [Patch(0, vector, position=n)]), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # the old keyword is deprecated from 5.24
            cache = output_cache(lm.model(input_ids=ids[:, :n], use_cache=True))
            out = lm.model(input_ids=ids[:, n:], position_ids=torch.arange(n, ids.shape[1])[None],
                           use_cache=True, **{keyword: cache})
        results.append(out.logits[0, -1].double())
    reference = _hand_patched_logits(lm.model, decoder_layers(lm.model)[0], full, n, vector)[-1]
    for logits in results:
        np.testing.assert_allclose(logits, reference, atol=1e-5)



@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_states_match_output_hidden_states_one_prompt_at_a_time(lms, arch):
    """All layers from one batched, left-padded pass = HF's hidden_states of separate unpadded passes
    (hidden_states[l + 1] is layer l's output, except the last one, which HF returns after the final norm)."""
    lm = lms[arch]
    texts = ["12@34=56\n78@90=", "11@22="]
    batched = last_token_states(lm, texts, batch_size=2)
    for i, text in enumerate(texts):
        with torch.no_grad():
            hs = lm.model(torch.tensor([lm.encode(text)]), output_hidden_states=True).hidden_states
        for layer in range(batched.shape[1] - 1):
            np.testing.assert_allclose(batched[i, layer], hs[layer + 1][0, -1], atol=1e-5)


def test_task_vector_is_the_mean_over_prompts(lms):
    lm, task = lms["gpt2"], get_task("copy_op1")
    v = task_vectors(lm, [task], n_prompts=3, n_examples=4, seed=5)["copy_op1"]
    from tasksup.vectors.extract import task_prompts

    each = [last_token_states(lm, [p.text])[0] for p in task_prompts(task, 3, 4, 5, 0)]
    np.testing.assert_allclose(v, torch.stack(each).mean(0), atol=1e-5)


def test_interpolation_endpoints(lms):
    lm = lms["llama"]
    states = last_token_states(lm, ["12@34=", "56@78="])
    v_a, v_b = states[0, 1], states[1, 1]
    assert torch.equal(interpolate(v_a, v_b, 1.0), v_a)
    assert torch.equal(interpolate(v_a, v_b, 0.0), v_b)
    with patching(lm.model, [Patch(1, interpolate(v_a, v_b, 1.0))]):
        p1 = lm.answer_probs(QUERY, ANSWERS)
    with patching(lm.model, [Patch(1, v_a)]):
        pa = lm.answer_probs(QUERY, ANSWERS)
    np.testing.assert_array_equal(p1, pa)
    with pytest.raises(TasksupError):
        interpolate(v_a, v_b, 1.5)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_hooks_are_removed_after_an_exception(lms, arch):
    model = lms[arch].model
    clean = n_hooks(model)
    vector = torch.zeros(model.config.hidden_size)
    for context in (lambda: patching(model, [Patch(0, vector)]), lambda: capturing(model),
                    lambda: capturing_heads(model), lambda: patching_heads(model, [HeadPatch(0, 0, torch.zeros(8))])):
        with pytest.raises(RuntimeError, match="boom"):
            with context():
                assert n_hooks(model) > clean
                raise RuntimeError("boom")
        assert n_hooks(model) == clean


def test_bad_layer_and_mode_are_user_errors(lms):
    model = lms["gpt2"].model
    with pytest.raises(TasksupError, match="out of range"):
        with patching(model, [Patch(3, torch.zeros(32))]):
            pass
    with pytest.raises(TasksupError, match="mode"):
        Patch(0, torch.zeros(32), mode="multiply")


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_head_outputs_sum_to_the_attention_output(lms, arch):
    """Per-head contributions + the projection's bias = the projection of all heads together; patching
    a head with its own activation changes nothing; with another activation, something."""
    lm = lms[arch]
    with capturing_heads(lm.model) as cap, torch.no_grad():
        lm.model(torch.tensor([lm.encode(QUERY)]))
    acts = cap.stacked()[0]  # [n_layers, heads * dim]
    heads = lm.model.config.num_attention_heads
    per_head = acts.reshape(acts.shape[0], heads, -1)
    contributions = head_contributions(lm.model, per_head)
    for layer, proj in enumerate(attention_out_projs(lm.model)):
        with torch.no_grad():
            full = proj(acts[layer][None])[0]
            bias = proj(torch.zeros_like(acts[layer])[None])[0]
        np.testing.assert_allclose(contributions[layer].sum(0) + bias, full, atol=1e-5)
    before = lm.answer_logprobs(QUERY, ANSWERS)
    with patching_heads(lm.model, [HeadPatch(1, 2, per_head[1, 2])]):
        np.testing.assert_allclose(lm.answer_logprobs(QUERY, ANSWERS), before, atol=1e-5, rtol=0)
    with patching_heads(lm.model, [HeadPatch(0, 2, per_head[0, 2] * 5 + 3)]):
        assert np.abs(lm.answer_logprobs(QUERY, ANSWERS) - before).max() > 1e-2


def test_corrupted_prompt_shuffles_answers_only():
    text = "11@22=11\n33@44=33\n55@66=55\n12@21=12\n13@31=13\n14@41=14\n77@88="
    out = corrupted_text(type("P", (), {"text": text})(), "=", "\n", np.random.default_rng(1))
    lines = out.split("\n")
    assert lines[-1] == "77@88="
    assert [ln.split("=")[0] for ln in lines[:-1]] == ["11@22", "33@44", "55@66", "12@21", "13@31", "14@41"]
    assert sorted(ln.split("=")[1] for ln in lines[:-1]) == ["11", "12", "13", "14", "33", "55"]
    assert out != text


def exhaustive_simplex_ls(basis, target):
    """Slow and obvious: equality-constrained least squares on every support set, best feasible one."""
    k = basis.shape[0]
    best, best_w = np.inf, None
    for size in range(1, k + 1):
        for support in itertools.combinations(range(k), size):
            a = basis[list(support)].T
            kkt = np.block([[2 * a.T @ a, np.ones((size, 1))], [np.ones((1, size)), np.zeros((1, 1))]])
            sol = np.linalg.lstsq(kkt, np.concatenate([2 * a.T @ target, [1.0]]), rcond=None)[0][:size]
            if (sol >= -1e-12).all():
                w = np.zeros(k)
                w[list(support)] = sol
                err = np.linalg.norm(basis.T @ w - target)
                if err < best - 1e-12:
                    best, best_w = err, w
    return best_w


def test_decomposition_recovers_known_convex_weights():
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(3, 64)) * 5
    for w in ([1, 0, 0], [0.5, 0.5, 0], [1 / 3, 1 / 3, 1 / 3], [0.2, 0.3, 0.5], [0, 0.25, 0.75]):
        np.testing.assert_allclose(simplex_weights(basis, np.asarray(w) @ basis), w, atol=1e-7)
    for _ in range(20):  # targets off the simplex: same optimum as the exhaustive solve
        target = rng.normal(size=64) * 5
        w = simplex_weights(basis, target)
        assert w.min() >= 0 and abs(w.sum() - 1) < 1e-12
        slow = exhaustive_simplex_ls(basis, target)
        np.testing.assert_allclose(np.linalg.norm(basis.T @ w - target), np.linalg.norm(basis.T @ slow - target),
                                   rtol=1e-7)
        np.testing.assert_allclose(w, slow, atol=1e-5)


def test_mixture_geometry_and_lda():
    rng = np.random.default_rng(1)
    means = rng.normal(size=(3, 16)) * 4
    mixture = [0.5, 0.5, 0.0]
    on_line = np.asarray(mixture) @ means
    assert mixture_geometry(means, on_line, mixture)["relative_distance"] < 1e-12
    off = mixture_geometry(means, on_line + (means[2] - means[0]), mixture)
    assert off["distance"] == pytest.approx(np.linalg.norm(means[2] - means[0]))
    points = np.concatenate([m + rng.normal(size=(20, 16)) * 0.1 for m in means])
    labels = [t for t in "abc" for _ in range(20)]
    projected = fit_lda(points, labels).transform(points)
    assert projected.shape == (60, 2)
    centers = np.array([projected[i * 20:(i + 1) * 20].mean(0) for i in range(3)])
    spread = np.array([projected[i * 20:(i + 1) * 20].std(0).max() for i in range(3)])
    assert np.linalg.norm(centers[0] - centers[1]) > 10 * spread.max()


def test_lone_queries_are_reproducible():
    task = get_task("to_de")
    q = lone_queries(task, 5, seed=3)
    assert q == lone_queries(task, 5, seed=3)
    assert all(text.endswith("->") and answer for text, answer in q)
