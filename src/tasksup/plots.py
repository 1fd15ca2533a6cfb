"""Figures in the style of the paper's. Every function writes PNG and PDF and returns the paths."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def save(fig, stem: Path) -> list[Path]:
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    png, pdf = stem.with_suffix(".png"), stem.with_suffix(".pdf")
    buffer = io.BytesIO()  # uncompressed: it is decoded at once (identical files, 15 ms a figure less)
    fig.savefig(buffer, format="png", bbox_inches="tight", dpi=150, pil_kwargs={"compress_level": 0})
    compact_png(buffer, png)
    fig.savefig(pdf, bbox_inches="tight", dpi=150)
    plt.close(fig)
    return [png, pdf]


def compact_png(source, target: Path) -> None:
    """A PNG in a 256-colour palette: a third of the bytes of matplotlib's RGBA, and no visible change for line
    and box plots (the PDF keeps the vector original). Fast octree quantization without PNG optimization:
    20 ms for a 1500 x 700 figure (median cut with optimization: 150 ms, and larger files)."""
    from PIL import Image

    with Image.open(source) as image:
        image.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE).save(target)


def task_boxplot(probs: np.ndarray, other: np.ndarray, tasks: Sequence[str], mixture: Sequence[float], title: str,
                 stem: Path, per_prompt: dict | None = None) -> list[Path]:
    """Fig. 2: the distribution over prompts of each task answer's probability, and ``other``.

    The dashed line is the ideal, calibrated value D_k (1/K for a uniform mixture). With ``per_prompt``
    (:func:`tasksup.metrics.per_prompt_choice`), a line under the title says how many prompts put their
    mass on one task, and whose example's.
    """
    if per_prompt:
        title += (f"\ncommitted (>= {per_prompt['threshold']:.0%} on one task): {per_prompt['committed']:.0%} of "
                  f"{per_prompt['n_prompts']} prompts; that task is example 1's in {per_prompt['follows_example_1']:.0%}")
    return task_boxplots([(probs, other, mixture, "")], tasks, title, stem)


def task_boxplots(panels: Sequence[tuple], tasks: Sequence[str], title: str, stem: Path) -> list[Path]:
    """Fig. 2-style box plots side by side, one per ``(probs, other, mixture, subtitle)`` panel (e.g. one per
    distribution of Fig. 6), with one legend; see :func:`task_boxplot`."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    width = max(1.2 * (len(tasks) + 1) + 1.5, 6.4) if len(panels) == 1 else (0.6 * (len(tasks) + 1) + 1.2) * len(panels)
    fig, axes = plt.subplots(1, len(panels), figsize=(width, 4.3),
                             layout="constrained", sharey=True, squeeze=False)
    handles = []
    for ax, (probs, other, mixture, subtitle) in zip(axes[0], panels):
        data = [probs[:, k] for k in range(len(tasks))] + [other]
        ax.boxplot(data, showfliers=True, flierprops={"markersize": 2}, medianprops={"color": "C1"})
        ax.set_xticks(range(1, len(tasks) + 2), list(tasks) + ["other"], rotation=30, ha="right")
        if len(set(np.round(mixture, 9))) == 1:
            ax.axhline(mixture[0], ls="--", color="gray", lw=1, label=f"ideal 1/K = {mixture[0]:.3g}")
        else:
            ax.scatter(range(1, len(tasks) + 1), mixture, marker="_", s=400, color="gray", label="ideal D_k")
        handles += [h for h in ax.get_legend_handles_labels()[0] if h.get_label() not in [x.get_label() for x in handles]]
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("task whose answer is scored")
        if subtitle:
            ax.set_title(subtitle, fontsize=8)
    handles += [Patch(facecolor="none", edgecolor="black", label="box: quartiles over prompts"),
                Line2D([], [], color="C1", label="median"), Line2D([], [], color="black", label="whiskers: 1.5 IQR"),
                Line2D([], [], color="black", marker="o", ls="none", ms=2, mfc="none", label="prompts beyond them")]
    axes[0, 0].set_ylabel("P(answer) per prompt")
    if len(panels) == 1:
        axes[0, 0].set_title(title, fontsize=8)
    else:
        fig.suptitle(title, fontsize=9)
    fig.legend(handles=handles, fontsize=7, loc="outside lower center", ncol=3, frameon=False)
    return save(fig, stem)


def lambda_curves(per_lambda: Sequence[dict], tasks: Sequence[str], title: str, stem: Path,
                  records: Sequence[dict] | None = None, xlabel: str | None = None) -> list[Path]:
    """Fig. 3: P(task A answer), P(task B answer) and ``other`` against lambda (the share of task A).

    Left: solid lines are medians over prompts, bands the interquartile range, dashed lines the means (a
    model that commits to one task per prompt has medians at 0 or 1 and is calibrated only in the mean);
    the dotted diagonals are ideal calibration (P(A) = lambda, P(B) = 1 - lambda). ``per_lambda``: entries
    with ``lambda`` and, per quantity, a :func:`tasksup.metrics.quartiles` dict.

    ``xlabel``: what lambda is (default: the share of A's examples; Fig. 5's patched panel: the vector weight).
    With ``records`` (each with ``lambda`` and ``probs``), a second panel shows the distribution over
    prompts of P(A) and P(B) at each lambda as paired box plots (as Fig. 2's): a model that superposes
    inside each prompt has both boxes near the diagonals; one that picks a task per prompt has boxes
    stretched from 0 to 1.
    """
    from matplotlib.legend_handler import HandlerTuple
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    a, b = tasks[0], tasks[1]
    colors = {a: "tab:blue", b: "tab:orange", "other": "tab:gray"}
    xlabel = xlabel or f"share of {a}'s examples (lambda)"
    lam = np.array([e["lambda"] for e in per_lambda])
    boxes = records is not None and len(records) > 0
    fig, axes = plt.subplots(1, 2 if boxes else 1, figsize=(10.0 if boxes else 5.0, 4.4), squeeze=False,
                             layout="constrained")
    ax = axes[0, 0]
    columns = []  # the legend: one column per task (median, mean, ideal), then "other", then the boxes
    for key in (a, b, "other"):
        color = colors[key]
        med, = ax.plot(lam, [e[key]["median"] for e in per_lambda], marker="o", ms=3, color=color)
        mean, = ax.plot(lam, [e[key]["mean"] for e in per_lambda], ls="--", lw=1.2, color=color)
        ax.fill_between(lam, [e[key]["q1"] for e in per_lambda], [e[key]["q3"] for e in per_lambda], color=color,
                        alpha=0.2, lw=0)
        name = "other" if key == "other" else f"P({key})"
        columns.append([((Patch(color=color, alpha=0.2, lw=0), med), f"{name}: median (band: quartiles)"),
                        (mean, f"{name}: mean")])
    columns[0].append((Line2D([], [], ls=":", color=colors[a]), f"ideal P({a}) = lambda"))
    columns[1].append((Line2D([], [], ls=":", color=colors[b]), f"ideal P({b}) = 1 - lambda"))
    columns[2].append((Line2D([], [], color="none"), ""))  # an empty slot: the columns stay aligned
    for ax_ in axes[0]:
        ax_.plot([0, 1], [0, 1], ls=":", color=colors[a], lw=1)
        ax_.plot([0, 1], [1, 0], ls=":", color=colors[b], lw=1)
        ax_.set_xlim(-0.04, 1.04)
        ax_.set_ylim(-0.03, 1.03)
        ax_.set_xlabel(xlabel)
    ax.set_ylabel("P(answer) over prompts")
    ax.set_title("median and mean over prompts", fontsize=9)
    if boxes:
        ax = axes[0, 1]
        step = float(np.min(np.diff(np.unique(lam)))) if len(np.unique(lam)) > 1 else 0.1
        width, offset = 0.38 * step, 0.21 * step
        column = []
        for k, (key, shift) in enumerate(((a, -offset), (b, offset))):
            color = colors[key]
            data = [[r["probs"][k] for r in records if r["lambda"] == x] for x in lam]
            ax.boxplot(data, positions=lam + shift, widths=width, patch_artist=True, manage_ticks=False,
                       boxprops={"facecolor": matplotlib.colors.to_rgba(color, 0.35), "edgecolor": color},
                       medianprops={"color": "black", "lw": 1.2}, whiskerprops={"color": color},
                       capprops={"color": color},
                       flierprops={"marker": "o", "markersize": 2, "markerfacecolor": color, "markeredgecolor": color,
                                   "alpha": 0.5})
            column.append((Patch(facecolor=matplotlib.colors.to_rgba(color, 0.35), edgecolor=color),
                           f"P({key}) per prompt"))
        column.append((Line2D([], [], ls="", marker="o", ms=3, color="0.4", alpha=0.6), "prompts beyond the whiskers"))
        columns.append(column)
        ax.set_xticks(lam, [f"{x:g}" for x in lam], fontsize=7)
        ax.set_ylabel("P(answer) per prompt")
        ax.set_title("per prompt (box: quartiles, black: median, whiskers: 1.5 IQR)", fontsize=9)
    fig.suptitle(title, fontsize=10)
    entries = [entry for column in columns for entry in column]  # the legend fills column by column
    fig.legend([h for h, _ in entries], [label for _, label in entries],
               handler_map={tuple: HandlerTuple(ndivide=None, pad=0)}, fontsize=7, loc="outside lower center",
               ncol=len(columns), frameon=False)
    return save(fig, stem)


def _bar_with_iqr(ax, x, stats: Sequence[dict | None], color: str, label: str, width: float = 0.35) -> None:
    """Bars at the means of :func:`tasksup.metrics.quartiles` dicts, whiskers at their quartiles."""
    mean = [s["mean"] if s else np.nan for s in stats]
    lo = [s["mean"] - s["q1"] if s else 0 for s in stats]
    hi = [s["q3"] - s["mean"] if s else 0 for s in stats]
    ax.bar(x, mean, width, color=color, label=label, yerr=np.abs([lo, hi]), capsize=3, ecolor="0.3")


def collapse_commitment(summary: dict, title: str, stem: Path) -> list[Path]:
    """Collapse (1): entropy over tasks and the top task's share, before vs after the first token."""
    fig, axes = plt.subplots(1, 2, figsize=(7.5, 3.2))
    labels = ["before", "after 1st token\n(greedy)", "after 1st token\n(sampling, T=1)"]
    for ax, key, ylabel in ((axes[0], "entropy", "entropy over tasks (bits)"), (axes[1], "top_share", "top task's share")):
        stats = [summary[f"{key}_before"], summary[f"{key}_after_greedy"], summary[f"{key}_after_sampling"]]
        _bar_with_iqr(ax, np.arange(3), stats, "tab:blue", "mean (whiskers: quartiles)", width=0.6)
        ax.set_xticks(range(3), labels, fontsize=8)
        ax.set_ylabel(ylabel)
    axes[0].axhline(summary["entropy_max"], ls="--", color="gray", lw=1, label="log2 K (uniform)")
    axes[0].legend(fontsize=7)
    axes[1].set_ylim(0, 1.05)
    fig.suptitle(title, fontsize=9)
    return save(fig, stem)


def collapse_sampling(summary: dict, tasks: Sequence[str], title: str, stem: Path) -> list[Path]:
    """Collapse (2): mean Eq. 3 probability per task vs sampling frequency vs greedy's choice."""
    names = list(tasks) + ["other"]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(1.1 * len(names) + 2.5, 3.4))
    for offset, key, color, label in ((-0.27, "mean_model", "tab:gray", "model (Eq. 3)"),
                                      (0.0, "mean_freq", "tab:blue", f"sampling (N={summary['n_samples']})"),
                                      (0.27, "greedy_freq", "tab:red", "greedy")):
        ax.bar(x + offset, summary[key], 0.27, color=color, label=label)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel("mean probability / frequency")
    kl = summary["kl"]["median"] if summary["kl"] else float("nan")
    ax.set_title(f"{title}\nKL(sampled || model): median {kl:.3g} nats (noise ~{summary['kl_noise']:.2g})", fontsize=9)
    ax.legend(fontsize=7)
    return save(fig, stem)


def collapse_drift(summary: dict, title: str, stem: Path) -> list[Path]:
    """Collapse (3): the share of the first committed task over turns, the entropy over tasks, and how
    far each turn moves the share of the task just answered (against a calibrated model's move)."""
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), layout="constrained")
    turns = np.arange(len(summary["entropy"]))
    stats = summary["share_first_committed"]
    if stats and stats[0]:
        axes[0].plot(turns, [s["mean"] for s in stats], marker="o", label="model (mean)")
        axes[0].fill_between(turns, [s["q1"] for s in stats], [s["q3"] for s in stats], alpha=0.2, lw=0,
                             label="quartiles")
        axes[0].plot(turns, summary["in_context_first_committed"], ls="--", color="gray",
                     label="its share of the examples")
        axes[0].legend(fontsize=7)
    axes[0].set_ylim(0, 1.02)
    axes[0].set_xlabel("turns (own answers appended)")
    axes[0].set_ylabel("share of the task first answered")
    ent = summary["entropy"]
    axes[1].plot(turns, [s["mean"] for s in ent], marker="o", color="tab:purple", label="model (mean)")
    axes[1].fill_between(turns, [s["q1"] for s in ent], [s["q3"] for s in ent], alpha=0.2, lw=0, color="tab:purple",
                         label="quartiles")
    axes[1].legend(fontsize=7)
    axes[1].set_xlabel("turns (own answers appended)")
    axes[1].set_ylabel("entropy over tasks (bits)")
    steps = summary["step_toward_committed"]
    if any(steps):
        x = np.arange(1, len(steps) + 1)
        _bar_with_iqr(axes[2], x, steps, "tab:green", "model (mean; whiskers: quartiles)", width=0.6)
        axes[2].plot(x, [np.nan if c is None else c for c in summary["calibrated_step_toward_committed"]], "k_",
                     ms=14, mew=2, label="calibrated (share of examples)")
        axes[2].legend(fontsize=7)
    axes[2].axhline(0, color="gray", lw=0.8)
    axes[2].set_xlabel("turn")
    axes[2].set_ylabel("change in share of task just answered")
    fig.suptitle(f"{title}\n(first committed on {summary['n_prompts_first_committed']} prompts; "
                 f"same task every turn: {summary['same_task_every_turn']:.0%})", fontsize=9)
    return save(fig, stem)


def scaling_bars(models: Sequence[str], stats: dict, ylabel: str, title: str, stem: Path,
                 ceiling: float | None = None, interval: str = "confidence interval") -> list[Path]:
    """Fig. 6: one group of bars per model (smallest first), one bar per distribution.

    ``stats``: distribution name -> (means, CI lows, CI highs), each a list over ``models``; the
    error bars are the confidence intervals, named by ``interval`` in the legend's title. ``ceiling``
    draws the largest possible value (r = K).
    """
    per_model = max(1.4, 0.08 * max(len(line) for m in models for line in m.split("\n")))  # labels side by side
    fig, ax = plt.subplots(figsize=(per_model * len(models) + 2.0, 3.6))
    width = 0.8 / len(stats)
    x = np.arange(len(models))
    for j, (name, (mean, low, high)) in enumerate(stats.items()):
        mean, low, high = (np.asarray(v, dtype=float) for v in (mean, low, high))
        ax.bar(x + (j - (len(stats) - 1) / 2) * width, mean, width, label=name,
               yerr=np.stack([mean - low, high - mean]), capsize=3, error_kw={"lw": 1})
    if ceiling is not None:
        ax.axhline(ceiling, ls="--", color="gray", lw=1, label=f"max = {ceiling:g}")
    ax.set_xticks(x, models, fontsize=8)
    ax.set_xlabel("model (parameters), smallest first", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, title=f"bars: mean over prompts\nwhiskers: {interval}", title_fontsize=7)
    return save(fig, stem)


def task_vector_scatter(points: dict, mixtures: dict, tasks: Sequence[str], title: str, stem: Path) -> list[Path]:
    """Fig. 4: task vectors on two LDA axes, one colour and marker per mixture (a qualitative map: the 13
    mixtures of the paper's figure stay apart); a large outlined marker is each mixture's mean.

    ``points``: mixture index -> [n, 2] projected vectors; ``mixtures``: mixture index -> D.
    """
    from matplotlib.lines import Line2D

    colors = plt.get_cmap("tab20").colors
    markers = "osD^vP*Xh<>p"
    fig, ax = plt.subplots(figsize=(6.0, 4.4))
    for n, (j, pts) in enumerate(points.items()):
        d = np.asarray(mixtures[j], dtype=float)
        color, marker = colors[2 * n % 20 + (2 * n // 20) % 2], markers[n % len(markers)]
        y = pts[:, 1] if pts.shape[1] > 1 else np.zeros(len(pts))
        ax.scatter(pts[:, 0], y, s=9, alpha=0.5, color=color, marker=marker, lw=0,
                   label="/".join(f"{x:.2f}" for x in d))
        ax.scatter(pts[:, 0].mean(), y.mean(), marker=marker, s=80, color=color, edgecolor="black", lw=0.8)
    mean = Line2D([], [], ls="", marker="o", ms=8, color="white", markeredgecolor="black", label="mean of a mixture")
    ax.set_xlabel("LDA axis 1")
    ax.set_ylabel("LDA axis 2")
    ax.set_title(title, fontsize=9)
    handles = ax.get_legend_handles_labels()[0] + [mean]
    ax.legend(handles=handles, fontsize=6, markerscale=1.6, title="mixture P(" + ")/P(".join(tasks) + ")",
              title_fontsize=6, bbox_to_anchor=(1.01, 1), loc="upper left")
    return save(fig, stem)


def layer_accuracy_curves(report: dict, title: str, stem: Path) -> list[Path]:
    """Patched lone-query accuracy per layer for each task (and their mean); dashed: no patch; dotted: ICL."""
    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    for n, (task, entry) in enumerate(report["per_task"].items()):
        color = plt.get_cmap("tab10")(n)
        acc = [np.nan if a is None else a for a in entry["layer_accuracy"]]
        ax.plot(range(len(acc)), acc, marker="o", ms=3, color=color, label=task)
        ax.axhline(entry["icl_accuracy"], ls=":", color=color, lw=1)
        ax.axhline(entry["baseline_accuracy"], ls="--", color=color, lw=0.8)
    ax.plot(range(len(report["mean_layer_accuracy"])), report["mean_layer_accuracy"], color="black", lw=2,
            label=f"mean (best layer {report['layer']})")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("layer patched")
    ax.set_ylabel("accuracy (exact top-1)")
    ax.set_title(f"{title}\n{report['method']} ({report['mode']})", fontsize=8)
    from matplotlib.lines import Line2D

    handles = ax.get_legend_handles_labels()[0] + [
        Line2D([], [], ls=":", color="gray", lw=1, label="ICL with m examples (a task's colour)"),
        Line2D([], [], ls="--", color="gray", lw=0.8, label="lone query, no patch (a task's colour)")]
    ax.legend(handles=handles, fontsize=6, bbox_to_anchor=(1.01, 1), loc="upper left")
    return save(fig, stem)


def emergence_curves(models: Sequence[dict], lam: float, tasks: Sequence[str], title: str, stem: Path) -> list[Path]:
    """Superposition mass P(A) + P(B) (left) and averaging mass (right, dotted: the family's other
    answers) against training tokens, log scale; one line per training run, smallest model first.

    ``models``: entries of the emergence experiment's family summary (``run``, ``tokens``,
    ``n_layer``, ``n_embd``, ``n_parameters``, ``tokenization``, ``per_lambda``). Error bars: the bootstrap
    intervals. Runs of one tokenization share a marker (the third axis: o characters, s whole numbers...).
    A model whose training tokens are unknown (not one of our runs) is a horizontal dash-dot line.
    """
    runs: dict = {}
    for m in models:
        runs.setdefault(m["run"] or m["model"], []).append(m)
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.6 + 0.17 * math.ceil((len(runs) + 3) / 2)), sharey=True,
                             layout="constrained")
    panels = ((axes[0], "superposition_mass", "-"), (axes[1], "averaging_mass", "-"), (axes[1], "outside_mass", ":"))
    tokenizations = sorted({m.get("tokenization") or "" for m in models})
    markers = dict(zip(tokenizations, "osD^v<>"))
    order = sorted(runs.items(), key=lambda kv: (kv[1][0].get("tokenization") or "", kv[1][0]["n_parameters"], kv[0]))
    for n, (run, members) in enumerate(order):
        color = plt.get_cmap("tab10")(n % 10)
        m0 = members[0]
        marker = markers[m0.get("tokenization") or ""]
        label = f"{Path(run).name}: {m0['n_layer']}x{m0['n_embd']}, {m0['n_parameters'] / 1e6:.3g}M"
        label += f", {m0['tokenization']}" if m0.get("tokenization") else ""
        members = sorted(members, key=lambda m: m["tokens"] or 0)
        for ax, q, ls in panels:
            stats = [next(e[q] for e in m["per_lambda"] if e["lambda"] == lam) for m in members]
            mean = np.array([s["mean"] for s in stats])
            if m0["tokens"] is None:  # one model, not one of our runs
                ax.axhline(mean[0], color=color, ls="-." if ls == "-" else ":", lw=1, label=label + " (tokens unknown)")
                continue
            err = np.abs([mean - [s["ci_low"] for s in stats], [s["ci_high"] for s in stats] - mean])
            ax.errorbar([m["tokens"] for m in members], mean, yerr=err, color=color, ls=ls, marker=marker, ms=3,
                        capsize=2, label=label if ls == "-" else None)
    axes[0].axhline(1.0, ls="--", color="gray", lw=1, label=f"ideal superposition: P({tasks[0]}) + P({tasks[1]}) = 1")
    axes[1].plot([], [], color="gray", ls="-", label="right: mass on the tasks between them (averaging)")
    axes[1].plot([], [], color="gray", ls=":", label="right, dotted: mass on the family's other tasks")
    axes[0].set_title(f"superposition: P({tasks[0]}) + P({tasks[1]})", fontsize=9)
    axes[1].set_title("averaging: tasks between them (dotted: the other tasks)", fontsize=9)
    axes[0].set_ylabel("probability (mean, 95% CI)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("training tokens seen")
        ax.set_ylim(-0.02, 1.02)
    entries = {label: handle for ax in axes for handle, label in zip(*ax.get_legend_handles_labels())}  # one per run
    fig.legend(entries.values(), entries.keys(), loc="outside lower center", ncol=2, fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=9)
    return save(fig, stem)
