"""``tasksup theory verify``: random tasks, proportions and inputs through both variants.

For every (K, m) pair, ``trials`` draws of K distinct random tasks, random example counts (flat
Dirichlet, then multinomial) and separated inputs; both variants are built for the same draw and
compared with the counted proportions ``p_k`` and with ``sum_k p_k g_k(x_query)`` computed directly
from the true tasks.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Sequence

import numpy as np

from tasksup.theory.construction import VARIANTS, Constants, build_weights
from tasksup.theory.layout import ResidualLayout, position_bits, sequence_length
from tasksup.theory.model import SuperpositionTransformer
from tasksup.theory.prompts import proportions_by_counting, sample_prompt, superposed_output
from tasksup.theory.tasks import random_tasks

WEIGHT_ERROR_TARGET = 0.02
WIDTH_FORMULA = "2d + 5 + (2 + S) L + K (4d + 4), L = ceil(log2(N + n)), N = mn + n - 1, S = distinct copy offsets <= min(K, n - 2)"


def sigmoid_weight(p: np.ndarray) -> np.ndarray:
    """Eq. 34: ``1 / (1 + e^{1 - 2p})``."""
    return 1.0 / (1.0 + np.exp(1.0 - 2.0 * p))


def _check(k_values: Sequence[int], m_values: Sequence[int], d: int, n: int, trials: int, min_separation: float) -> None:
    if not k_values or not m_values:
        raise ValueError("k_values and m_values must each list at least one value")
    for K in k_values:
        if not isinstance(K, int) or K < 1:
            raise ValueError(f"every K must be an integer >= 1, got {K!r}")
    for m in m_values:
        if not isinstance(m, int) or m < 1:
            raise ValueError(f"every m must be an integer >= 1, got {m!r}")
    if not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials must be an integer >= 1, got {trials!r}")
    if not isinstance(d, int) or d < 1:
        raise ValueError(f"d must be an integer >= 1, got {d!r}")
    if not isinstance(n, int) or n < 3:
        raise ValueError(f"n must be an integer >= 3 (x_1, '=', y), got {n!r}")
    if not min_separation > 0:
        raise ValueError(f"min_separation must be > 0, got {min_separation!r}")


def verify(k_values: Sequence[int] = (2, 3, 4), m_values: Sequence[int] = (1, 4, 16, 64), d: int = 4, n: int = 6,
           trials: int = 4, seed: int = 0, constants: Constants | None = None,
           min_separation: float = 0.1) -> dict:
    """Errors of both variants over random draws, and the layers/heads/width actually used."""
    _check(k_values, m_values, d, n, trials, min_separation)
    c = constants if constants is not None else Constants()
    rng = np.random.default_rng(seed)
    configs = []
    for K in k_values:
        for m in m_values:
            row = {"K": K, "m": m, "d": d, "n": n, "N": sequence_length(m, n), "widths": [],
                   "weight_error_exact": 0.0, "weight_error_sigmoid": 0.0, "sigmoid_formula_error": 0.0,
                   "proportion_error": 0.0, "output_error_exact": 0.0, "output_error_sigmoid": 0.0,
                   "sigmoid_output_formula_error": 0.0}
            for _ in range(trials):
                tasks = random_tasks(K, d, n, rng)
                prompt = sample_prompt(tasks, m, n, rng, min_separation=min_separation)
                p = proportions_by_counting(prompt.example_tasks, K)
                target = superposed_output(tasks, prompt.query, p)
                for variant in VARIANTS:
                    model = SuperpositionTransformer(build_weights(tasks, d, m, n, variant, c))
                    trace = model.run(prompt.tokens, prompt.is_eq)
                    w, out = trace.task_weights.numpy(), trace.output.numpy()
                    _raise(row, f"weight_error_{variant}", np.abs(w - p).max())
                    _raise(row, f"output_error_{variant}", np.abs(out - target).max())
                    if variant == "sigmoid":
                        _raise(row, "sigmoid_formula_error", np.abs(w - sigmoid_weight(p)).max())
                        expected = superposed_output(tasks, prompt.query, sigmoid_weight(p))
                        _raise(row, "sigmoid_output_formula_error", np.abs(out - expected).max())
                    else:
                        props = trace.residuals["L6.attn"][-1, [model.layout.row(f"prop{k}") for k in range(K)]]
                        _raise(row, "proportion_error", np.abs(props.numpy() - p).max())
                        row["widths"].append(model.width)
                        row["bits"] = model.layout.bits
                        row["heads_per_layer"] = model.heads_per_layer
                        row["heads_used"] = [sum(bool(h.w_v.any()) for h in layer.heads)
                                             for layer in model.construction.layers]
                        row["layers"] = model.num_layers
            row["width"] = max(row.pop("widths"))
            row["theorem_d_plus_log_mn"] = round(d + math.log2(m * n), 2)
            configs.append(row)
    summary = {key: max(r[key.removeprefix("max_")] for r in configs) for key in (
        "max_weight_error_exact", "max_weight_error_sigmoid", "max_output_error_exact", "max_output_error_sigmoid",
        "max_sigmoid_formula_error", "max_sigmoid_output_formula_error", "max_proportion_error")}
    return {
        **summary,
        "target_max_weight_error_exact": WEIGHT_ERROR_TARGET,
        "target_met": summary["max_weight_error_exact"] <= WEIGHT_ERROR_TARGET,
        "layers": max(r["layers"] for r in configs),
        "heads_per_layer": {str(r["K"]): _common(r["heads_per_layer"]) for r in configs},
        "width": max(r["width"] for r in configs),
        "width_formula": WIDTH_FORMULA,
        "width_scaling": {"d": d, "n": n, "m": max(m_values), "d_plus_log2_mn": round(d + math.log2(max(m_values) * n), 2),
                          "rows": width_table(d, n, max(m_values))},
        "settings": {"k_values": list(k_values), "m_values": list(m_values), "d": d, "n": n, "trials": trials,
                     "seed": seed, "min_separation": min_separation, "constants": asdict(c)},
        "configs": configs,
    }


def _common(counts: list[int]) -> int | list[int]:
    """The number of heads if every layer has the same, else the per-layer list."""
    return counts[0] if len(set(counts)) == 1 else counts


def _raise(row: dict, key: str, value: float) -> None:
    row[key] = max(row[key], float(value))


def width_table(d: int, n: int, m: int, k_values: Sequence[int] = (1, 2, 4, 8, 16, 32)) -> list[dict]:
    """Widths of the layout when every task reads its own position (``S = min(K, n - 2)``)."""
    bits = position_bits(m, n)
    return [{"K": K, "S": min(K, n - 2), "width": ResidualLayout.width_formula(d, K, bits, min(K, n - 2))}
            for K in k_values]


def format_report(report: dict) -> str:
    """A markdown summary: one row per (K, m), then the maxima."""
    lines = ["| K | m | N | bits | width | d+log2(mn) | heads used per layer | max abs(w-p) exact | max abs(w-p) sigmoid "
             "| max abs(w - eq.34) | out err exact | out err sigmoid |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["configs"]:
        lines.append(f"| {r['K']} | {r['m']} | {r['N']} | {r['bits']} | {r['width']} | {r['theorem_d_plus_log_mn']} "
                     f"| {r['heads_used']} | {r['weight_error_exact']:.2e} | {r['weight_error_sigmoid']:.3f} "
                     f"| {r['sigmoid_formula_error']:.2e} | {r['output_error_exact']:.2e} "
                     f"| {r['output_error_sigmoid']:.3f} |")
    s = report["settings"]
    lines += [
        "",
        f"settings: K in {s['k_values']}, m in {s['m_values']}, d={s['d']}, n={s['n']}, trials={s['trials']}, "
        f"seed={s['seed']}, min_separation={s['min_separation']}, constants={s['constants']}",
        f"layers: {report['layers']}; heads per attention layer: K ({report['heads_per_layer']}); "
        f"max width: {report['width']} = {report['width_formula']}",
        f"width vs K at d={report['width_scaling']['d']}, n={report['width_scaling']['n']}, "
        f"m={report['width_scaling']['m']} (d + log2(mn) = {report['width_scaling']['d_plus_log2_mn']}): "
        + ", ".join(f"K={r['K']}: {r['width']}" for r in report["width_scaling"]["rows"]),
        f"max |w_k - p_k|: exact {report['max_weight_error_exact']:.3e} (target <= {report['target_max_weight_error_exact']}, "
        f"{'met' if report['target_met'] else 'NOT met'}), sigmoid {report['max_weight_error_sigmoid']:.4f}; "
        f"sigmoid vs eq. 34's 1/(1+e^(1-2p)): {report['max_sigmoid_formula_error']:.3e}",
        f"max output error vs sum_k p_k g_k(x_query): exact {report['max_output_error_exact']:.3e}, "
        f"sigmoid {report['max_output_error_sigmoid']:.4f} (vs sum_k sigmoid(2p_k-1) g_k: "
        f"{report['max_sigmoid_output_formula_error']:.3e}); internal p_k vs counting: {report['max_proportion_error']:.3e}",
    ]
    return "\n".join(lines)
