"""Figures in the style of the paper's. Every function writes PNG and PDF and returns the paths."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def save(fig, stem: Path) -> list[Path]:
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for p in paths:
        fig.savefig(p, bbox_inches="tight", dpi=150)
    plt.close(fig)
    return paths


def task_boxplot(probs: np.ndarray, other: np.ndarray, tasks: Sequence[str], mixture: Sequence[float], title: str,
                 stem: Path) -> list[Path]:
    """Fig. 2: the distribution over prompts of each task answer's probability, and ``other``.

    The dashed line is the ideal, calibrated value D_k (1/K for a uniform mixture).
    """
    fig, ax = plt.subplots(figsize=(1.2 * (len(tasks) + 1) + 1.5, 3.6))
    data = [probs[:, k] for k in range(len(tasks))] + [other]
    ax.boxplot(data, showfliers=True, flierprops={"markersize": 2})
    ax.set_xticks(range(1, len(tasks) + 2), list(tasks) + ["other"], rotation=30, ha="right")
    if len(set(np.round(mixture, 9))) == 1:
        ax.axhline(mixture[0], ls="--", color="gray", lw=1, label=f"ideal 1/K = {mixture[0]:.3g}")
    else:
        ax.scatter(range(1, len(tasks) + 1), mixture, marker="_", s=400, color="gray", label="ideal D_k")
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("probability")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    return save(fig, stem)
