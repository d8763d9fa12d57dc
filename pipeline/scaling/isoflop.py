"""Chinchilla approach 2: IsoFLOP profiles.

Runs that spent the same compute C are one budget; along a budget, loss against log N is close
to a parabola whose vertex is that budget's compute-optimal size N_opt(C). Straight lines through
(log C, log N_opt) and (log C, log D_opt) give N_opt = k_N C^a and D_opt = k_D C^b. This needs
no functional form for L(N, D), which is why it is the cross-check on approach 3
(there a = beta / (alpha + beta) and b = alpha / (alpha + beta)).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

MIN_SIZES = 3
"""A parabola has three coefficients."""


class IsoFlopUnavailable(ValueError):
    """The runs do not make two usable budgets, so there is no line to fit."""


class _Skipped(Exception):
    """One budget gives no optimum; the message says why."""


@dataclass(frozen=True)
class BudgetOptimum:
    compute: float
    """Geometric mean of the budget's runs' C = 6 N D."""
    n_opt: float
    d_opt: float
    loss: float
    """The parabola's value at its vertex."""
    n_runs: int


@dataclass(frozen=True)
class IsoFlopFit:
    a: float
    """N_opt = n_coefficient * C^a."""
    n_coefficient: float
    b: float
    """D_opt = d_coefficient * C^b."""
    d_coefficient: float
    budgets: tuple[BudgetOptimum, ...]
    skipped: tuple[str, ...]
    """Why each left-out budget was left out (also issued as warnings)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "n_coefficient": self.n_coefficient,
            "b": self.b,
            "d_coefficient": self.d_coefficient,
            "budgets": [vars(budget) for budget in self.budgets],
            "skipped": list(self.skipped),
        }


def group_budgets(compute: np.ndarray, rtol: float) -> list[np.ndarray]:
    """Indices of runs, one array per budget: sorted by C, a run joins the current budget while its C
    is within ``rtol`` of the budget's smallest C (planned budgets drift a little once N and D are
    rounded)."""
    order = np.argsort(compute)
    groups: list[list[int]] = []
    for index in order:
        if groups and compute[index] <= compute[groups[-1][0]] * (1.0 + rtol):
            groups[-1].append(int(index))
        else:
            groups.append([int(index)])
    return [np.array(group) for group in groups]


def fit_isoflop(n: Any, d: Any, loss: Any, rtol: float = 0.05) -> IsoFlopFit:
    """Per-budget parabola vertices, then log-log lines; raises IsoFlopUnavailable under two budgets."""
    n, d, loss = (np.asarray(x, dtype=float) for x in (n, d, loss))
    compute = 6.0 * n * d
    optima: list[BudgetOptimum] = []
    skipped: list[str] = []
    for group in group_budgets(compute, rtol):
        budget = float(np.exp(np.mean(np.log(compute[group]))))
        try:
            optima.append(_budget_optimum(budget, n[group], loss[group]))
        except _Skipped as reason:
            skipped.append(f"budget C={budget:.3g}: {reason}; skipped")
            warnings.warn(f"isoflop: {skipped[-1]}", stacklevel=2)
    if len(optima) < 2:
        raise IsoFlopUnavailable(
            f"IsoFLOP needs at least 2 budgets with {MIN_SIZES}+ model sizes each; got {len(optima)}"
        )
    log_c = np.log([o.compute for o in optima])
    a, log_kn = np.polyfit(log_c, np.log([o.n_opt for o in optima]), 1)
    b, log_kd = np.polyfit(log_c, np.log([o.d_opt for o in optima]), 1)
    return IsoFlopFit(
        a=float(a),
        n_coefficient=float(np.exp(log_kn)),
        b=float(b),
        d_coefficient=float(np.exp(log_kd)),
        budgets=tuple(optima),
        skipped=tuple(skipped),
    )


def _budget_optimum(budget: float, n: np.ndarray, loss: np.ndarray) -> BudgetOptimum:
    """The vertex of the budget's parabola; _Skipped when there is none to trust. A vertex outside
    the sampled sizes would extrapolate a curve that is a parabola only near its minimum."""
    distinct = len(np.unique(n))
    if distinct < MIN_SIZES:
        raise _Skipped(f"{distinct} model size{'s' if distinct != 1 else ''}, a parabola needs {MIN_SIZES}")
    curvature, slope, intercept = np.polyfit(np.log(n), loss, 2)
    if curvature <= 0:
        raise _Skipped("loss against log N is not convex, so it has no minimum")
    log_n_opt = -slope / (2.0 * curvature)
    if not np.log(n.min()) <= log_n_opt <= np.log(n.max()):
        raise _Skipped(
            f"the minimum, N={np.exp(log_n_opt):.3g}, lies outside the sizes run "
            f"({n.min():.3g} to {n.max():.3g})"
        )
    n_opt = float(np.exp(log_n_opt))
    return BudgetOptimum(
        compute=budget,
        n_opt=n_opt,
        d_opt=budget / (6.0 * n_opt),
        loss=float(intercept - slope**2 / (4.0 * curvature)),
        n_runs=len(n),
    )
