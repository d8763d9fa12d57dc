"""Chinchilla approach 3: fit L(N, D) = E + A / N^alpha + B / D^beta to (N, D, loss) points.

The method is Hoffmann et al. (2022) as replicated by Besiroglu et al. (2024), so that the same
points give the same law: minimise the *sum* over points of Huber(delta=1e-3) of
``log L_pred - log L_obs`` with ``log L_pred = LSE(a - alpha log N, b - beta log D, e)``
(A = e^a, B = e^b, E = e^e), by L-BFGS from every start of a grid, keeping the lowest
objective. The grid's starts run together (pipeline/scaling/multistart.py) for up to
``search_iterations`` iterations, which settles all but those crawling across the flat Huber
plateaus far from any fit; scipy's L-BFGS-B then finishes the ``polish`` lowest at full tolerance.
In log space the parameters are unconstrained and the residuals are relative errors,
so the 2 nats of a small model and the 0.2 of a large one weigh alike; Huber keeps a few
outlying runs from steering the fit.

Confidence intervals come from a nonparametric bootstrap: resample the points with replacement,
refit from the full-data optimum (one L-BFGS run instead of the whole grid: the resampled
optimum lies near it), and take percentiles.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from pipeline.core.errors import InputError
from pipeline.scaling.multistart import minimize_batch

PARAMS = ("E", "A", "B", "alpha", "beta")
"""The reported parameters; internally the vector is (a, b, e, alpha, beta)."""


@dataclass(frozen=True)
class InitGrid:
    """Starting points of the multi-start search (Hoffmann et al.'s grid by default: 4,500 starts)."""

    alpha: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0)
    beta: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0)
    e: tuple[float, ...] = (-1.0, -0.5, 0.0, 0.5, 1.0)
    a: tuple[float, ...] = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)
    b: tuple[float, ...] = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)

    def starts(self) -> np.ndarray:
        """Every combination, one row (a, b, e, alpha, beta) each."""
        return np.array(
            [
                (a, b, e, alpha, beta)
                for alpha, beta, e, a, b in itertools.product(self.alpha, self.beta, self.e, self.a, self.b)
            ]
        )


@dataclass(frozen=True)
class FitOptions:
    grid: InitGrid = field(default_factory=InitGrid)
    huber_delta: float = 1e-3
    """On log loss: residuals above 0.1% count linearly, which is what makes the fit robust."""
    n_bootstrap: int = 200
    """Resampled refits behind the confidence intervals; 0 leaves the intervals out."""
    ci_level: float = 0.95
    seed: int = 0
    gtol: float = 1e-10
    ftol: float = 1e-12
    """L-BFGS-B stops when the objective changes by less than ftol * max(|f|, 1). The summed
    Huber objective is of order 1e-3, so scipy's default (2.2e-9) stops while the parameters
    still move: that early stop is one way to land on Hoffmann et al.'s published values."""
    maxiter: int = 20_000
    search_iterations: int = 1_000
    """Iterations of the grid's joint search. On the books tables the start that wins was already the
    lowest after 200, and the starts still moving after 1,000 sat at 10x the best objective."""
    polish: int = 10
    """The lowest starts of the joint search that scipy's L-BFGS-B finishes; the best of them is the fit."""


@dataclass(frozen=True)
class ComputeOptimal:
    """The allocation of a compute budget C = 6 N D that the fitted law says minimises loss."""

    compute: float
    n: float
    d: float
    loss: float
    ci: dict[str, tuple[float, float]]
    """``N``, ``D``, ``loss`` -> (lo, hi) over the bootstrap fits; empty without a bootstrap."""


@dataclass(frozen=True)
class ScalingFit:
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    ci: dict[str, tuple[float, float]]
    """Each of PARAMS -> (lo, hi), percentile bootstrap at ``ci_level``; empty without a bootstrap."""
    objective: float
    """Summed Huber loss at the optimum (comparable between fits of the same points only)."""
    n_points: int
    ci_level: float = 0.95
    bootstrap: np.ndarray = field(default_factory=lambda: np.empty((0, 5)), repr=False, compare=False)
    """One row (E, A, B, alpha, beta) per bootstrap refit: what the derived quantities' CIs use."""

    def predict(self, n: Any, d: Any) -> np.ndarray:
        """Predicted loss at model size(s) ``n`` and token count(s) ``d`` (broadcast)."""
        return _law(np.array([self.E, self.A, self.B, self.alpha, self.beta]), n, d)

    def predict_interval(self, n: float, d: float) -> tuple[float, tuple[float, float] | None]:
        """The predicted loss at (``n``, ``d``) and its percentile interval over the bootstrap fits (None
        without a bootstrap): the uncertainty of the law, not of one run's noise."""
        loss = float(self.predict(n, d))
        if not len(self.bootstrap):
            return loss, None
        return loss, _percentiles(np.array([_law(row, n, d) for row in self.bootstrap]), self.ci_level)

    def compute_optimal(self, compute: float) -> ComputeOptimal:
        """Closed form under C = 6 N D: N* = G (C/6)^(beta/(alpha+beta)),
        G = (alpha A / (beta B))^(1/(alpha+beta))."""
        n, d, loss = _optimum(np.array([self.E, self.A, self.B, self.alpha, self.beta]), compute)
        ci: dict[str, tuple[float, float]] = {}
        if len(self.bootstrap):
            draws = np.array([_optimum(row, compute) for row in self.bootstrap])
            ci = {key: _percentiles(draws[:, i], self.ci_level) for i, key in enumerate(("N", "D", "loss"))}
        return ComputeOptimal(float(compute), n, d, loss, ci)

    def to_json(self) -> dict[str, Any]:
        """fit.json: the law, its intervals, and every bootstrap refit (``bootstrap``: rows of E, A, B,
        alpha, beta), which is what a prediction's interval is computed from later."""
        return {
            **{key: getattr(self, key) for key in PARAMS},
            "ci": {key: list(bounds) for key, bounds in self.ci.items()},
            "ci_level": self.ci_level,
            "n_bootstrap": len(self.bootstrap),
            "n_points": self.n_points,
            "objective": self.objective,
            "bootstrap": self.bootstrap.tolist(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScalingFit:
        """The fit ``to_json`` wrote (one written before the refits were kept has no prediction intervals)."""
        try:
            return cls(
                **{key: float(data[key]) for key in PARAMS},
                ci={key: (float(lo), float(hi)) for key, (lo, hi) in data.get("ci", {}).items()},
                objective=float(data["objective"]),
                n_points=int(data["n_points"]),
                ci_level=float(data.get("ci_level", 0.95)),
                bootstrap=np.array(data.get("bootstrap", []), dtype=float).reshape(-1, len(PARAMS)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"not a fit written by lmpipe sweep fit: {type(exc).__name__}: {exc}") from None


def fit_scaling_law(n: Any, d: Any, loss: Any, options: FitOptions = FitOptions()) -> ScalingFit:
    """Fit E, A, B, alpha, beta to points (n[i], d[i], loss[i]); see the module docstring for the method."""
    n, d, loss = (np.asarray(x, dtype=float) for x in (n, d, loss))
    if not n.shape == d.shape == loss.shape or n.ndim != 1:
        raise InputError(
            f"N, D and loss must be 1-D and of one length; got shapes {n.shape}, {d.shape}, {loss.shape}"
        )
    if len(n) < len(PARAMS):
        raise InputError(
            f"need at least {len(PARAMS)} points to fit {len(PARAMS)} parameters "
            f"({', '.join(PARAMS)}); got {len(n)}"
        )
    for name, values in (("N", n), ("D", d), ("loss", loss)):
        if not np.all(np.isfinite(values) & (values > 0)):
            bad = int(np.argmin(np.isfinite(values) & (values > 0)))
            raise InputError(f"{name} must be positive and finite; point {bad} has {values[bad]!r}")
    data = (np.log(n), np.log(d), np.log(loss))

    # L-BFGS-B's 5-dimensional linear algebra is tiny: multi-threaded BLAS only adds its
    # synchronisation, which made each iteration 8x slower on a busy 2-core machine.
    with threadpool_limits(limits=1, user_api="blas"):
        theta, objective = _search(data, options)
        rng = np.random.default_rng(options.seed)
        refits = []
        for _ in range(options.n_bootstrap):
            sample = rng.integers(0, len(n), len(n))
            refit, value = _minimize(theta, tuple(column[sample] for column in data), options)
            if np.isfinite(value):
                refits.append(_natural(refit))
    bootstrap = np.array(refits).reshape(-1, len(PARAMS))
    ci = (
        {key: _percentiles(bootstrap[:, i], options.ci_level) for i, key in enumerate(PARAMS)}
        if len(bootstrap)
        else {}
    )
    E, A, B, alpha, beta = (float(x) for x in _natural(theta))
    return ScalingFit(
        E=E,
        A=A,
        B=B,
        alpha=alpha,
        beta=beta,
        ci=ci,
        objective=float(objective),
        n_points=len(n),
        ci_level=options.ci_level,
        bootstrap=bootstrap,
    )


def huber_objective(
    theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_loss: np.ndarray, delta: float
) -> tuple[float, np.ndarray]:
    """Summed Huber of the log residuals at theta = (a, b, e, alpha, beta), and its gradient."""
    values, gradients = huber_objectives(np.asarray(theta)[None], log_n, log_d, log_loss, delta)
    return float(values[0]), gradients[0]


def huber_objectives(
    thetas: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_loss: np.ndarray, delta: float
) -> tuple[np.ndarray, np.ndarray]:
    """``huber_objective`` at each row of ``thetas`` (S, 5) at once; the points are (P,) arrays shared
    by every row, or (S, P) arrays, one set per row (a bootstrap's resamples).

    d log L_pred / d(term k) is the softmax weight of term k, and Huber' is the residual clipped
    to [-delta, delta], so the gradient is exact and costs one pass.
    """
    a, b, e, alpha, beta = (column[:, None] for column in np.asarray(thetas, dtype=float).T)
    log_n, log_d, log_loss = np.broadcast_arrays(log_n, log_d, log_loss)
    terms = np.stack(np.broadcast_arrays(a - alpha * log_n, b - beta * log_d, e))  # (3, S, P)
    top = terms.max(axis=0)
    shifted = np.exp(terms - top)
    total = shifted.sum(axis=0)
    residual = top + np.log(total) - log_loss
    clipped = np.clip(residual, -delta, delta)  # Huber': squaring it cannot overflow where a start is far off
    values = (0.5 * clipped**2 + delta * (np.abs(residual) - np.abs(clipped))).sum(axis=-1)
    weights = shifted * (clipped / total)  # softmax * Huber', (3, S, P)
    gradients = np.stack(
        [
            weights[0].sum(axis=-1),
            weights[1].sum(axis=-1),
            weights[2].sum(axis=-1),
            -(weights[0] * log_n).sum(axis=-1),
            -(weights[1] * log_d).sum(axis=-1),
        ],
        axis=-1,
    )
    return values, gradients


def _search(data: tuple[np.ndarray, ...], options: FitOptions) -> tuple[np.ndarray, float]:
    """The grid's best optimum: every start at once, then the ``polish`` lowest finished one by one."""
    log_n, log_d, log_loss = data
    found = minimize_batch(
        lambda thetas: huber_objectives(thetas, log_n, log_d, log_loss, options.huber_delta),
        options.grid.starts(),
        gtol=options.gtol,
        ftol=options.ftol,
        maxiter=options.search_iterations,
    )
    lowest = np.argsort(found.fun, kind="stable")[: options.polish]
    return min((_minimize(found.x[i], data, options) for i in lowest), key=lambda result: result[1])


def _minimize(
    start: np.ndarray, data: tuple[np.ndarray, ...], options: FitOptions
) -> tuple[np.ndarray, float]:
    """One L-BFGS-B run. Its result counts whether or not scipy calls it a success: a run stopped by a
    line search that can no longer improve still reports a real point and its real objective, and the
    objective is what picks the winner."""
    result = minimize(
        huber_objective,
        start,
        args=(*data, options.huber_delta),
        jac=True,
        method="L-BFGS-B",
        options={
            "gtol": options.gtol,
            "ftol": options.ftol,
            "maxiter": options.maxiter,
            "maxfun": 2 * options.maxiter,
        },
    )
    value = float(result.fun) if np.all(np.isfinite(result.x)) else np.inf
    return result.x, value


def _natural(theta: np.ndarray) -> np.ndarray:
    """(a, b, e, alpha, beta) -> (E, A, B, alpha, beta)."""
    a, b, e, alpha, beta = theta
    return np.array([np.exp(e), np.exp(a), np.exp(b), alpha, beta])


def _law(params: np.ndarray, n: Any, d: Any) -> np.ndarray:
    E, A, B, alpha, beta = params
    return E + A / np.asarray(n, dtype=float) ** alpha + B / np.asarray(d, dtype=float) ** beta


def _optimum(params: np.ndarray, compute: float) -> tuple[float, float, float]:
    E, A, B, alpha, beta = params
    scale = (alpha * A / (beta * B)) ** (1.0 / (alpha + beta))
    n = scale * (compute / 6.0) ** (beta / (alpha + beta))
    d = compute / (6.0 * n)
    return float(n), float(d), float(_law(params, n, d))


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    tail = 50.0 * (1.0 - level)
    lo, hi = np.percentile(values, [tail, 100.0 - tail])
    return float(lo), float(hi)
