"""Theorem 1's construction (tasksup.theory): each lemma's stage on its own, then the whole."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tasksup.theory import (NUM_LAYERS, Constants, CopyTask, ResidualLayout, SmoothTask, build_superposition_transformer,
                            build_weights, exact_logit_knots, proportions_by_counting, random_tasks, sample_prompt,
                            superposed_output, verify)
from tasksup.theory.layout import binary_codes, embed
from tasksup.theory.tasks import SMOOTH_FUNCTIONS
from tasksup.theory.verify import width_table

D, M, N_LEN = 3, 8, 5
COUNTS = [3, 4, 1]
ATOL = 1e-9


def make_tasks(d=D):
    # two tasks share position 1 (one shifted code), one reads position 2
    return [CopyTask(position=1, dim=d), SmoothTask(position=2, dim=d, fn_name="sin"),
            SmoothTask(position=1, dim=d, fn_name="square")]


@pytest.fixture(scope="module")
def setup():
    tasks = make_tasks()
    prompt = sample_prompt(tasks, M, N_LEN, np.random.default_rng(1), counts=COUNTS)
    models = {v: build_superposition_transformer(tasks, D, M, N_LEN, v) for v in ("exact", "sigmoid")}
    traces = {v: mod.run(prompt.tokens, prompt.is_eq) for v, mod in models.items()}
    return tasks, prompt, models, traces


def rows(model, trace, stage, name):
    return trace.residuals[stage][:, model.layout.rows(name)].numpy()


def row(model, trace, stage, name):
    return trace.residuals[stage][:, model.layout.row(name)].numpy()


def label_positions(m=M, n=N_LEN):
    return [j * n + n - 1 for j in range(m)]


def pl_interpolant(task, x):
    """The slow obvious g~: np.interp through the knots (copy: identity)."""
    if isinstance(task, CopyTask):
        return np.array(x, dtype=float)
    t = np.linspace(-1, 1, task.knots + 1)
    return np.interp(x, t, task.fn(t))


# ---------------------------------------------------------------- tasks and Definition 1

def test_relu_sums_follow_definition_1_and_match_the_interpolant():
    x = np.random.default_rng(0).uniform(-1.5, 1.5, size=(200, D))
    for task in [CopyTask(1, D)] + [SmoothTask(1, D, name) for name in SMOOTH_FUNCTIONS]:
        rs = task.relu_sum
        assert np.abs(rs.a).sum(axis=1).max() <= 1 + 1e-12          # |a_m|_1 <= 1
        assert rs.coefficient_sum == pytest.approx(np.abs(rs.c).sum())
        assert rs.num_relus == (2 if isinstance(task, CopyTask) else task.knots + 2)
        np.testing.assert_allclose(task.approx(x), pl_interpolant(task, x), atol=1e-12)
        assert task.approx_error < 1e-4
        inside = x[np.abs(x).max(axis=1) <= 1]
        assert np.abs(task.approx(inside) - task(inside)).max() <= task.approx_error + 1e-9


def test_random_tasks_are_distinct_and_reproducible():
    a = random_tasks(4, D, 6, np.random.default_rng(5))
    b = random_tasks(4, D, 6, np.random.default_rng(5))
    assert [t.key for t in a] == [t.key for t in b]
    assert len({t.key for t in a}) == 4
    assert all(1 <= t.position <= 4 for t in a)


def test_sample_prompt_layout_and_separation():
    tasks = make_tasks()
    p = sample_prompt(tasks, M, N_LEN, np.random.default_rng(2), counts=COUNTS, min_separation=0.3)
    assert p.tokens.shape == (M * N_LEN + N_LEN - 1, D) and p.tokens.dtype == torch.float64
    assert sorted(p.example_tasks) == [0, 0, 0, 1, 1, 1, 1, 2]
    assert p.is_eq.nonzero().flatten().tolist() == [j * N_LEN + N_LEN - 2 for j in range(M + 1)]
    for j, k in enumerate(p.example_tasks):
        y = p.label(j)
        np.testing.assert_allclose(y, tasks[k](p.example(j)[tasks[k].position - 1]))
        for i, t in enumerate(tasks):
            if i != k:
                assert np.abs(t(p.example(j)[t.position - 1]) - y).sum() >= 0.3
    again = sample_prompt(tasks, M, N_LEN, np.random.default_rng(2), counts=COUNTS, min_separation=0.3)
    assert torch.equal(p.tokens, again.tokens)


def test_binary_codes_separate_positions_by_two():
    codes = binary_codes(torch.arange(64), 6)
    gram = codes @ codes.T
    assert torch.all(gram.diagonal() == 6)
    assert torch.all(gram[~torch.eye(64, dtype=torch.bool)] <= 4)


# ---------------------------------------------------------------- each lemma on its own

def test_lemma1_marks_label_positions(setup):
    _, prompt, models, traces = setup
    mod, tr = models["exact"], traces["exact"]
    expected = np.zeros(len(prompt.tokens))
    expected[label_positions()] = 1.0
    np.testing.assert_allclose(row(mod, tr, "L1.attn", "label"), expected, atol=ATOL)   # eq. 5
    np.testing.assert_array_equal(row(mod, tr, "L1.attn", "eq"), prompt.is_eq.numpy())   # flag kept


def test_lemma2_computes_each_task_on_every_token(setup):
    tasks, prompt, models, traces = setup
    mod, tr = models["exact"], traces["exact"]
    x = prompt.tokens.numpy()
    for k, task in enumerate(tasks):                                                      # eq. 7
        np.testing.assert_allclose(rows(mod, tr, "L1.mlp", f"g{k}"), pl_interpolant(task, x), atol=1e-12)
    N = len(x)
    np.testing.assert_array_equal(row(mod, tr, "L1.mlp", "last"), np.eye(N)[N - 1])       # eq. 30 markers
    np.testing.assert_array_equal(row(mod, tr, "L1.mlp", "second_last"), np.eye(N)[N - 2])


def test_lemma2_aligns_task_output_with_label_and_subtracts_it(setup):
    tasks, prompt, models, traces = setup
    mod, tr = models["exact"], traces["exact"]
    for k, task in enumerate(tasks):
        for j, t in enumerate(label_positions()):
            want = pl_interpolant(task, prompt.example(j)[task.position - 1])
            np.testing.assert_allclose(rows(mod, tr, "L2.attn", f"aligned{k}")[t], want, atol=ATOL)   # eq. 15
            np.testing.assert_allclose(rows(mod, tr, "L2.mlp", f"diff{k}")[t], want - prompt.label(j),
                                       atol=ATOL)                                                     # eq. 17


def test_lemma3_norm_cleanup_and_indicators(setup):
    tasks, prompt, models, traces = setup
    mod, tr = models["exact"], traces["exact"]
    labels = label_positions()
    others = [t for t in range(len(prompt.tokens)) if t not in labels]
    for k, task in enumerate(tasks):
        norm = np.array([np.abs(pl_interpolant(task, prompt.example(j)[task.position - 1]) - prompt.label(j)).sum()
                         for j in range(M)])
        np.testing.assert_allclose(row(mod, tr, "L3.mlp", f"norm{k}")[labels], norm, atol=ATOL)     # eq. 20
        after = row(mod, tr, "L4.mlp", f"norm{k}")
        np.testing.assert_allclose(after[labels], norm, atol=1e-7)                                  # eq. 22
        np.testing.assert_allclose(after[others], 1.0, atol=ATOL)
        made_by_k = np.array([float(e == k) for e in prompt.example_tasks])
        ind = row(mod, tr, "L5.mlp", f"ind{k}")
        np.testing.assert_allclose(ind[labels], made_by_k, atol=1e-6)                               # eq. 25
        np.testing.assert_allclose(ind[others], 0.0, atol=ATOL)


def test_lemma3_average_is_the_running_share_of_each_task(setup):
    tasks, prompt, models, traces = setup
    mod, tr = models["exact"], traces["exact"]
    labels = label_positions()
    for k in range(len(tasks)):
        prop = row(mod, tr, "L6.attn", f"prop{k}")
        for t in range(labels[0], len(prompt.tokens)):            # causal: labels up to t (eq. 28)
            seen = [prompt.example_tasks[j] for j, u in enumerate(labels) if u <= t]
            assert prop[t] == pytest.approx(sum(e == k for e in seen) / len(seen), abs=1e-9)
    p = proportions_by_counting(prompt.example_tasks, len(tasks))
    np.testing.assert_allclose([row(mod, tr, "L6.attn", f"prop{k}")[-1] for k in range(3)], p, atol=1e-9)


def test_lemma4_scores_and_cleared_query_rows(setup):
    tasks, prompt, models, traces = setup
    p = proportions_by_counting(prompt.example_tasks, len(tasks))
    c = Constants()
    for variant in ("sigmoid", "exact"):
        mod, tr = models[variant], traces[variant]
        for k, task in enumerate(tasks):
            score = row(mod, tr, "L6.mlp", f"score{k}")
            np.testing.assert_allclose(score[:-2], -c.c_out, atol=ATOL)                            # eq. 31
            if variant == "sigmoid":
                np.testing.assert_allclose(score[-2:], [1 - p[k], p[k]], atol=1e-9)
            else:
                logit = math.log(p[k] / (1 - p[k]))
                np.testing.assert_allclose(score[-2:], [0.0, logit], atol=1e-7)
            query = rows(mod, tr, "L3.attn", f"query{k}")[-1]                                    # eq. 30
            np.testing.assert_allclose(query, pl_interpolant(task, prompt.query[task.position - 1]), atol=ATOL)
            cleared = rows(mod, tr, "L6.mlp", f"query{k}")                                        # eq. 32
            np.testing.assert_allclose(cleared[:-1], 0.0, atol=ATOL)
            np.testing.assert_allclose(cleared[-1], query, atol=ATOL)


def test_lemma4_weights_and_output(setup):
    tasks, prompt, models, traces = setup
    p = proportions_by_counting(prompt.example_tasks, len(tasks))
    sig = 1 / (1 + np.exp(1 - 2 * p))
    w_exact = traces["exact"].task_weights.numpy()
    w_sig = traces["sigmoid"].task_weights.numpy()
    np.testing.assert_allclose(w_exact, p, atol=1e-9)
    np.testing.assert_allclose(w_sig, sig, atol=1e-9)                                             # eq. 34/36
    for variant, w in (("exact", w_exact), ("sigmoid", w_sig)):
        out = traces[variant].output.numpy()
        np.testing.assert_allclose(out, superposed_output(tasks, prompt.query, w, approx=True), atol=1e-12)


# ---------------------------------------------------------------- the whole construction

def test_whole_output_matches_direct_superposition(setup):
    tasks, prompt, models, traces = setup
    p = proportions_by_counting(prompt.example_tasks, len(tasks))
    eps = max(t.approx_error for t in tasks)
    direct = superposed_output(tasks, prompt.query, p)                       # true g_k, counted p_k
    assert np.abs(models["exact"](prompt.tokens, prompt.is_eq).numpy() - direct).max() <= eps + 1e-9
    direct_sig = superposed_output(tasks, prompt.query, 1 / (1 + np.exp(1 - 2 * p)))
    assert np.abs(traces["sigmoid"].output.numpy() - direct_sig).max() <= eps + 1e-9


@pytest.mark.parametrize("variant", ["exact", "sigmoid"])
def test_weights_over_every_proportion(variant):
    """All p in {0, 1/10, ..., 1}: exact gives p, sigmoid gives eq. 34's 1/(1 + e^{1-2p})."""
    tasks = [CopyTask(1, 2), CopyTask(3, 2)]
    m, n = 10, 5
    model = build_superposition_transformer(tasks, 2, m, n, variant)
    for r in range(m + 1):
        prompt = sample_prompt(tasks, m, n, np.random.default_rng(r), counts=[r, m - r])
        w = model.run(prompt.tokens, prompt.is_eq).task_weights.numpy()
        p = np.array([r, m - r]) / m
        want = p if variant == "exact" else 1 / (1 + np.exp(1 - 2 * p))
        np.testing.assert_allclose(w, want, atol=1e-9)
    if variant == "sigmoid":  # last draw p = (1, 0): eq. 34 misses p by 1 - sigmoid(1) = 0.269 at both ends
        np.testing.assert_allclose(w, [1 / (1 + math.e ** -1), 1 / (1 + math.e)], atol=1e-9)


def test_exact_logit_knots_invert_the_sigmoid():
    for m in (1, 2, 7, 64):
        knots = exact_logit_knots(m, 30.0)
        assert knots[0] == -30.0 and knots[-1] == 30.0
        np.testing.assert_allclose(1 / (1 + np.exp(-knots[1:-1])), np.arange(1, m) / m, atol=1e-12)


def test_tau_zero_is_equation_24_verbatim(setup):
    """tau = 0: the indicator is ReLU(b - C z); for a smooth task it falls short of 1 by C |g~ - g|_1."""
    tasks, prompt, _, _ = setup
    c = Constants(tau=0.0)
    mod = build_superposition_transformer(tasks, D, M, N_LEN, "exact", c)
    tr = mod.run(prompt.tokens, prompt.is_eq)
    b = row(mod, tr, "L1.attn", "label")
    for k in range(len(tasks)):
        z = row(mod, tr, "L4.mlp", f"norm{k}")
        np.testing.assert_allclose(row(mod, tr, "L5.mlp", f"ind{k}"), np.maximum(b - c.c_delta * z, 0), atol=1e-12)
    sin_labels = [t for j, t in enumerate(label_positions()) if prompt.example_tasks[j] == 1]
    assert row(mod, tr, "L5.mlp", "ind1")[sin_labels].min() < 1 - 1e-4


def test_dead_zone_keeps_weights_exact_for_approximate_tasks(setup):
    tasks, prompt, _, traces = setup
    c0 = build_superposition_transformer(tasks, D, M, N_LEN, "exact", Constants(tau=0.0))
    w0 = c0.run(prompt.tokens, prompt.is_eq).task_weights.numpy()
    p = proportions_by_counting(prompt.example_tasks, 3)
    assert np.abs(traces["exact"].task_weights.numpy() - p).max() < 1e-9
    assert np.abs(w0 - p).max() > 1e-4   # verbatim eq. 24 leaks the ReLU approximation error into w


def test_small_c_pos_degrades_alignment():
    """c_pos controls the shift heads' softmax leakage."""
    tasks = make_tasks()
    prompt = sample_prompt(tasks, M, N_LEN, np.random.default_rng(1), counts=COUNTS)
    errs = []
    for c_pos in (0.5, 2.0, 15.0):
        mod = build_superposition_transformer(tasks, D, M, N_LEN, "exact", Constants(c_pos=c_pos))
        tr = mod.run(prompt.tokens, prompt.is_eq)
        got = rows(mod, tr, "L2.attn", "aligned0")[label_positions()]
        want = np.stack([prompt.example(j)[0] for j in range(M)])
        errs.append(np.abs(got - want).max())
    assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-9 and errs[0] > 1e-2


# ---------------------------------------------------------------- sizes and a slow reference

def test_seven_layers_with_k_heads_and_the_documented_width():
    for K in (1, 2, 4):
        tasks = random_tasks(K, 4, 6, np.random.default_rng(K))
        mod = build_superposition_transformer(tasks, 4, 16, 6)
        assert mod.num_layers == NUM_LAYERS == 7
        assert mod.heads_per_layer == [K] * 7
        S = len({6 - t.position for t in tasks})
        assert mod.width == ResidualLayout.width_formula(4, K, mod.layout.bits, S)
        assert mod.layout.bits == math.ceil(math.log2(16 * 6 + 5 + 6))
        W = mod.width
        expected = 0
        for layer in mod.construction.layers:
            dh, H = layer.heads[0].w_q.shape[1], layer.mlp.w1.shape[1]
            expected += K * (2 * W * dh + W * W) + W * H + H + H * W + W
        assert sum(p.numel() for p in mod.parameters()) == expected
        used = [sum(bool(h.w_v.any()) for h in layer.heads) for layer in mod.construction.layers]
        assert used == [1, K, K, 0, 0, K, K]
        distinct = build_superposition_transformer([CopyTask(i, 4) for i in range(1, K + 1)], 4, 16, 6)
        assert distinct.width == {r["K"]: r["width"] for r in width_table(4, 6, 16)}[K]


def slow_forward(weights, X):
    """Token-by-token loops over the same weights: the obvious transformer."""
    X = X.copy()
    for layer in weights.layers:
        add = np.zeros_like(X)
        for h in layer.heads:
            for t in range(len(X)):
                scores = np.array([(X[t] @ h.w_q) @ (X[u] @ h.w_k) for u in range(t + 1)])
                a = np.exp(scores - scores.max())
                a /= a.sum()
                add[t] += sum(a[u] * (X[u] @ h.w_v) for u in range(t + 1))
        X = X + add
        for t in range(len(X)):
            X[t] = X[t] + np.maximum(X[t] @ layer.mlp.w1 + layer.mlp.b1, 0) @ layer.mlp.w2 + layer.mlp.b2
    return X


def test_module_matches_slow_reference():
    tasks = [CopyTask(1, 2), SmoothTask(2, 2, "cos", knots=16)]
    m, n = 3, 4
    prompt = sample_prompt(tasks, m, n, np.random.default_rng(0))
    mod = build_superposition_transformer(tasks, 2, m, n, "sigmoid")
    X0 = embed(mod.layout, prompt.tokens, prompt.is_eq, n).numpy()
    tr = mod.run(prompt.tokens, prompt.is_eq)
    np.testing.assert_allclose(tr.residuals["L7.mlp"].numpy(), slow_forward(mod.construction, X0), atol=1e-9)


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("kwargs, message", [
    (dict(tasks=[]), "K = 0"),
    (dict(m=0), "m must be"),
    (dict(n=2), "n must be"),
    (dict(d=0), "d must be"),
    (dict(tasks=[CopyTask(1, 3), CopyTask(2, 4)]), "dimension 4, but d = 3"),
    (dict(tasks=[CopyTask(0, 3)]), "outside 1..3"),
    (dict(tasks=[CopyTask(4, 3)]), "outside 1..3"),
    (dict(tasks=[CopyTask(1, 3), CopyTask(1, 3)]), "identical"),
    (dict(variant="softmax"), "variant must be"),
])
def test_bad_construction_input(kwargs, message):
    args = dict(tasks=[CopyTask(1, 3)], d=3, m=4, n=5, variant="exact") | kwargs
    with pytest.raises(ValueError, match=message) as err:
        build_weights(**args)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("kwargs", [dict(c_pos=0.0), dict(tau=-0.1), dict(c_out=float("inf")), dict(c_big=0.5)])
def test_bad_constants(kwargs):
    with pytest.raises(ValueError, match="constant"):
        Constants(**kwargs)


def test_bad_prompt_and_tokens():
    tasks = [CopyTask(1, 3)]
    mod = build_superposition_transformer(tasks, 3, 4, 5)
    with pytest.raises(ValueError, match="shape"):
        mod.run(torch.zeros(10, 3, dtype=torch.float64), torch.zeros(10, dtype=torch.bool))
    with pytest.raises(ValueError, match="counts"):
        sample_prompt(tasks, 4, 5, np.random.default_rng(0), counts=[3])
    with pytest.raises(ValueError, match="K must be"):
        random_tasks(0, 3, 5, np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown smooth function"):
        SmoothTask(1, 3, "exp")
    with pytest.raises(ValueError, match="trials"):
        verify(trials=0)
    with pytest.raises(ValueError, match="every m"):
        verify(m_values=(0,))


# ---------------------------------------------------------------- verify

def test_verify_meets_target_and_is_reproducible():
    a = verify(k_values=(2, 4), m_values=(1, 64), trials=1, seed=3)
    assert a["max_weight_error_exact"] <= 0.02 and a["target_met"]
    assert a["max_sigmoid_formula_error"] < 1e-9
    assert a["max_output_error_exact"] < 1e-3
    assert a["layers"] == 7 and a["heads_per_layer"] == {"2": 2, "4": 4}
    assert a["width"] == max(r["width"] for r in a["configs"])
    assert verify(k_values=(3,), m_values=(2,), seed=5) == verify(k_values=(3,), m_values=(2,), seed=5)
