"""Convex combinations of task vectors: interpolation (Fig. 5) and decomposition (Fig. 4).

``simplex_weights`` solves  min_w ||A w - v||²  subject to  w >= 0, sum(w) = 1,  the columns of A
being the pure tasks' vectors. It uses :func:`scipy.optimize.nnls` (Lawson-Hanson, an active-set
method that terminates after finitely many steps with no tolerance or starting point to tune) on
the system augmented with the row ``rho * 1^T w = rho``: as rho grows the solution converges to
the simplex-constrained one, with a sum-to-one violation of order ||residual|| / rho². rho is
10^4 times the largest column norm, so the violation is far below float32 noise; the weights are
then divided by their sum. (SLSQP would enforce the constraint exactly but is an iterative solver
with a stopping tolerance; with K = 2-3 tasks the two agree, and the tests check NNLS against
an exhaustive solve over every support set.)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.optimize import nnls

from tasksup.errors import TasksupError

RHO_SCALE = 1e4


def interpolate(v_a, v_b, lam: float):
    """V_λ = λ·V_A + (1-λ)·V_B (paper §6); works on numpy arrays and torch tensors alike."""
    if not 0.0 <= lam <= 1.0:
        raise TasksupError(f"lambda must be in [0, 1], got {lam}")
    return lam * v_a + (1.0 - lam) * v_b


def simplex_weights(basis: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Weights w >= 0, sum 1, minimising ||basis.T @ w - target|| (basis: [K, d] pure vectors; target: [d])."""
    basis = np.asarray(basis, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if basis.ndim != 2 or target.shape != (basis.shape[1],):
        raise TasksupError(f"simplex_weights needs a [K, d] basis and a [d] target, got {basis.shape} and {target.shape}")
    rho = RHO_SCALE * max(float(np.linalg.norm(basis, axis=1).max()), 1.0)
    a = np.vstack([basis.T, np.full((1, basis.shape[0]), rho)])
    b = np.concatenate([target, [rho]])
    w, _ = nnls(a, b, maxiter=50 * basis.shape[0])
    return w / w.sum()


def decomposition_errors(basis: np.ndarray, targets: np.ndarray, mixtures: Sequence[Sequence[float]]) -> dict:
    """Recovered weights of each target and their mean absolute error against the in-context mixture."""
    recovered = np.array([simplex_weights(basis, t) for t in np.atleast_2d(targets)])
    mae = np.abs(recovered - np.asarray(mixtures, dtype=float)).mean(-1)
    return {"weights": recovered.tolist(), "mae": mae.tolist()}
