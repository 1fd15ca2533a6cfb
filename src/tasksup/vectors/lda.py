"""Figure 4's geometry: an LDA projection fit on pure-task vectors, and where mixtures fall.

The paper's claim (Finding 3) is that a mixture's task vectors lie near the convex combination of
the pure tasks' vectors with the in-context proportions. ``mixture_geometry`` measures that in
the full hidden space: the distance from a mixture's mean vector to sum_k D_k mu_k, relative to
the mean distance between two pure means (0 = exactly on the combination; 1 = as far off as two
tasks are from each other).
"""

from __future__ import annotations

from itertools import combinations
from typing import Sequence

import numpy as np
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from tasksup.errors import TasksupError


def fit_lda(pure_vectors: np.ndarray, labels: Sequence[str], n_components: int = 2) -> LinearDiscriminantAnalysis:
    """LDA (scikit-learn, SVD solver: fine when the width exceeds the number of prompts) on pure-task vectors."""
    n_classes = len(set(labels))
    if n_classes < 2:
        raise TasksupError("LDA needs the vectors of at least two pure tasks")
    lda = LinearDiscriminantAnalysis(n_components=min(n_components, n_classes - 1))
    return lda.fit(np.asarray(pure_vectors, dtype=np.float64), list(labels))


def pure_spread(pure_means: np.ndarray) -> float:
    """Mean Euclidean distance between two pure tasks' mean vectors."""
    return float(np.mean([np.linalg.norm(a - b) for a, b in combinations(np.asarray(pure_means), 2)]))


def mixture_geometry(pure_means: np.ndarray, mixture_mean: np.ndarray, mixture: Sequence[float]) -> dict:
    """Distance of a mixture's mean vector to sum_k D_k mu_k, absolute and relative to :func:`pure_spread`."""
    pure_means = np.asarray(pure_means, dtype=np.float64)
    combination = np.asarray(mixture, dtype=np.float64) @ pure_means
    distance = float(np.linalg.norm(np.asarray(mixture_mean, dtype=np.float64) - combination))
    return {"distance": distance, "relative_distance": distance / pure_spread(pure_means)}
