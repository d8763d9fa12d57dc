"""The joint L-BFGS search: each start reaches the minimum scipy's L-BFGS-B reaches from it, and a fit's
grid search lands on the optimum that running scipy from every start finds."""

import numpy as np
import pytest
from scipy.optimize import minimize, rosen, rosen_der
from threadpoolctl import threadpool_limits

from pipeline.scaling.fit import FitOptions, InitGrid, _minimize, _search, huber_objectives
from pipeline.scaling.multistart import minimize_batch


def rosenbrocks(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.array([rosen(row) for row in x]), np.array([rosen_der(row) for row in x])


def test_every_start_reaches_the_minimum_scipy_reaches():
    starts = np.random.default_rng(0).uniform(-2.0, 2.0, size=(12, 4))
    result = minimize_batch(rosenbrocks, starts, gtol=1e-10, ftol=1e-14, maxiter=5_000)
    for start, x, value in zip(starts, result.x, result.fun):
        reference = minimize(rosen, start, jac=rosen_der, method="L-BFGS-B", options={"gtol": 1e-10})
        assert value == pytest.approx(reference.fun, abs=1e-9)
        np.testing.assert_allclose(x, reference.x, atol=1e-4)


def test_a_start_at_the_minimum_stays_and_a_nonfinite_start_never_moves():
    def objective(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(invalid="ignore"):
            barrier = np.sqrt(x[:, 0]) * 0.0  # nan where x0 < 0
        return ((x - 1.0) ** 2).sum(axis=1) + barrier, 2 * (x - 1.0)

    starts = np.array([[-1.0, 0.0], [1.0, 1.0], [3.0, -4.0]])
    result = minimize_batch(objective, starts, gtol=1e-10, ftol=0.0, maxiter=100)
    assert result.fun[0] == np.inf and result.x[0].tolist() == [-1.0, 0.0]
    assert result.x[1].tolist() == [1.0, 1.0] and result.fun[1] == 0.0
    np.testing.assert_allclose(result.x[2], [1.0, 1.0], atol=1e-9)


def test_the_grid_search_finds_the_optimum_of_scipy_from_every_start():
    """Noisy points from a law off the grid: the joint search then polish gives the lowest objective that
    L-BFGS-B from each of the grid's starts gives (the method before the joint search)."""
    rng = np.random.default_rng(3)
    n, d = (x.ravel() for x in np.meshgrid(np.logspace(4.5, 6.2, 5), np.logspace(5.4, 6.8, 5)))
    loss = (2.1 + 30 / n**0.3 + 90 / d**0.25) * np.exp(0.01 * rng.standard_normal(n.shape))
    data = (np.log(n), np.log(d), np.log(loss))
    grid = InitGrid(alpha=(0.0, 1.0), beta=(0.0, 1.0), e=(-1.0, 1.0), a=(0.0, 20.0), b=(0.0, 15.0))
    options = FitOptions(grid=grid, n_bootstrap=0)
    with threadpool_limits(limits=1, user_api="blas"):  # as in fit_scaling_law: 5x5 BLAS is all overhead
        theta, objective = _search(data, options)
        every = min((_minimize(start, data, options) for start in grid.starts()), key=lambda pair: pair[1])
    assert objective == pytest.approx(every[1], rel=1e-9)
    np.testing.assert_allclose(theta, every[0], rtol=1e-4, atol=1e-6)
    values, _ = huber_objectives(np.array([theta, every[0]]), *data, options.huber_delta)
    assert values[0] == pytest.approx(objective)
