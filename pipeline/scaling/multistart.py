"""L-BFGS run from many starting points at once, each start one row of a numpy array.

Approach 3's multi-start search runs 4,500 independent 5-parameter minimisations. One scipy
L-BFGS-B call per start spends ~0.1 ms of Python and Fortran overhead per iteration on a few
microseconds of arithmetic: ~4 minutes a fit. Here every start takes its iteration together, so the
overhead is paid once per iteration for all of them and a fit's search takes seconds.

The method is textbook L-BFGS (Nocedal & Wright, algorithm 7.4: two-loop recursion, ``memory``
pairs) with a backtracking Armijo line search, and scipy's stopping rules: a start stops when its
largest gradient component is at most ``gtol``, when an accepted step lowers the objective by at
most ``ftol * max(|f|, |f_new|, 1)``, or when no step along its direction lowers it. A start whose
direction is not a descent direction restarts from steepest descent with its history cleared.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

BatchObjective = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
"""x of shape (S, k), any S rows -> (values (S,), gradients (S, k))."""

ARMIJO = 1e-4
"""Sufficient decrease: a step t along d must lower f by at least ARMIJO * t * |g . d|."""
MAX_HALVINGS = 50


@dataclass(frozen=True)
class BatchResult:
    x: np.ndarray
    """(S, k): where each start stopped."""
    fun: np.ndarray
    """(S,): the objective there (inf where it never was finite)."""
    iterations: int
    """Iterations of the longest-running start."""


def minimize_batch(
    objective: BatchObjective,
    x0: np.ndarray,
    *,
    gtol: float,
    ftol: float,
    maxiter: int,
    memory: int = 10,
) -> BatchResult:
    """Minimise from every row of ``x0`` at once; see the module docstring for the method."""
    x = np.array(x0, dtype=float)
    size, dims = x.shape
    f, g = objective(x)
    steps = np.zeros((size, memory, dims))  # newest pair last; rho = 0 marks an empty slot
    changes = np.zeros((size, memory, dims))
    rho = np.zeros((size, memory))
    active = np.isfinite(f) & (np.abs(g).max(axis=1) > gtol)
    iteration = 0
    while iteration < maxiter and active.any():
        iteration += 1
        rows = np.flatnonzero(active)
        direction = _direction(g[rows], steps[rows], changes[rows], rho[rows])
        slope = np.einsum("ij,ij->i", g[rows], direction)
        restart = ~(slope < 0)
        if restart.any():  # not a descent direction: steepest descent, history cleared
            again = rows[restart]
            rho[again] = 0.0
            direction[restart] = _direction(g[again], steps[again], changes[again], rho[again])
            slope[restart] = np.einsum("ij,ij->i", g[again], direction[restart])
        new_x, new_f, new_g, moved = _line_search(objective, x[rows], f[rows], slope, direction)
        step, change = new_x - x[rows], new_g - g[rows]
        curvature, change_size = np.einsum("ij,ij->i", step, change), np.einsum("ij,ij->i", change, change)
        keep = moved & (change_size > 0) & (curvature > 1e-10 * change_size)  # y.y can underflow to 0
        kept = rows[keep]
        for history, pair in ((steps, step), (changes, change)):
            history[kept] = np.roll(history[kept], -1, axis=1)
            history[kept, -1] = pair[keep]
        rho[kept] = np.roll(rho[kept], -1, axis=1)
        rho[kept, -1] = 1.0 / curvature[keep]
        stalled = new_f[moved] >= f[rows[moved]] - ftol * np.maximum.reduce(
            [np.abs(f[rows[moved]]), np.abs(new_f[moved]), np.ones(moved.sum())]
        )
        x[rows[moved]], f[rows[moved]], g[rows[moved]] = new_x[moved], new_f[moved], new_g[moved]
        done = ~moved
        done[moved] = stalled | (np.abs(new_g[moved]).max(axis=1) <= gtol)
        active[rows[done]] = False
    return BatchResult(x=x, fun=np.where(np.isfinite(f), f, np.inf), iterations=iteration)


def _direction(gradient: np.ndarray, steps: np.ndarray, changes: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """-H g by the two-loop recursion, H0 = (s.y / y.y) I from the newest pair; without one, a step of
    unit length along -g (scipy's first step)."""
    q = gradient.copy()
    memory = rho.shape[1]
    alphas = np.zeros_like(rho)
    for i in reversed(range(memory)):
        alphas[:, i] = rho[:, i] * np.einsum("ij,ij->i", steps[:, i], q)
        q -= alphas[:, i, None] * changes[:, i]
    newest_yy = np.einsum("ij,ij->i", changes[:, -1], changes[:, -1])
    has_pair = rho[:, -1] > 0
    scale = 1.0 / np.maximum(np.linalg.norm(gradient, axis=1), np.finfo(float).tiny)
    scale[has_pair] = 1.0 / (rho[has_pair, -1] * newest_yy[has_pair])
    r = scale[:, None] * q
    for i in range(memory):
        beta = rho[:, i] * np.einsum("ij,ij->i", changes[:, i], r)
        r += steps[:, i] * (alphas[:, i] - beta)[:, None]
    return -r


def _line_search(
    objective: BatchObjective,
    x: np.ndarray,
    f: np.ndarray,
    slope: np.ndarray,
    direction: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Backtracking from t = 1, halving until Armijo holds. Returns the new points, values, gradients
    and which rows moved (a row that found no decreasing step in MAX_HALVINGS halvings stays put)."""
    new_x, new_f, new_g = x.copy(), f.copy(), np.zeros_like(x)
    moved = np.zeros(len(x), dtype=bool)
    t = np.ones(len(x))
    pending = np.arange(len(x))
    for _ in range(MAX_HALVINGS):
        trial = x[pending] + t[pending, None] * direction[pending]
        value, gradient = objective(trial)
        accept = np.isfinite(value) & (value <= f[pending] + ARMIJO * t[pending] * slope[pending])
        done = pending[accept]
        new_x[done], new_f[done], new_g[done] = trial[accept], value[accept], gradient[accept]
        moved[done] = True
        pending = pending[~accept]
        if not len(pending):
            break
        t[pending] *= 0.5
    return new_x, new_f, new_g, moved
