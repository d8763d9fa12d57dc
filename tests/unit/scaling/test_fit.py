"""Scaling-law fits: approach 3 recovers a known law, its bootstrap CIs cover it, the closed-form
compute optimum is the real minimum, IsoFLOP recovers the optimal exponents, and ``lmpipe sweep fit``
turns a CSV into fit.json or into one clear line."""

import argparse
import csv
import functools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from pipeline.cli.main import USER_ERRORS
from pipeline.cli.sweep import add_parsers as add_sweep_parser
from pipeline.scaling import fit as fit_module
from pipeline.scaling.fit import FitOptions, InitGrid, ScalingFit, fit_scaling_law, huber_objective
from pipeline.scaling.isoflop import IsoFlopUnavailable, fit_isoflop

TRUE = {"E": 1.8, "A": 400.0, "B": 2000.0, "alpha": 0.34, "beta": 0.37}
# 8 starts instead of Hoffmann et al.'s 4,500 keep the tests fast; they bracket the true
# (a, b, e) = (6.0, 7.6, 0.59) as the full grid brackets any plausible law.
SMALL_GRID = InitGrid(alpha=(0.5,), beta=(0.5,), e=(0.0, 1.0), a=(5.0, 10.0), b=(5.0, 10.0))


def true_loss(n, d):
    return TRUE["E"] + TRUE["A"] / np.asarray(n) ** TRUE["alpha"] + TRUE["B"] / np.asarray(d) ** TRUE["beta"]


def grid_points(sizes: int, noise: float = 0.0, seed: int = 0):
    """An N x D grid (10M..10B parameters, 1B..1T tokens) with multiplicative log-normal noise."""
    n, d = (x.ravel() for x in np.meshgrid(np.logspace(7, 10, sizes), np.logspace(9, 12, sizes)))
    loss = true_loss(n, d) * np.exp(noise * np.random.default_rng(seed).standard_normal(n.shape))
    return n, d, loss


TRUE_THETA = [math.log(TRUE["A"]), math.log(TRUE["B"]), math.log(TRUE["E"]), TRUE["alpha"], TRUE["beta"]]


@pytest.mark.parametrize("theta", [TRUE_THETA, [5.0, 9.0, 0.0, 0.5, 0.2]], ids=["at-the-law", "far"])
def test_gradient_is_exact(theta):
    """With 0.1% noise, at the true law most residuals lie inside delta (quadratic Huber), far from
    it all lie outside (linear Huber): both branches of the gradient are checked."""
    n, d, loss = grid_points(4, noise=0.001)
    data = (np.log(n), np.log(d), np.log(loss), 1e-3)
    theta = np.array(theta)
    step = 1e-7
    central = [
        (huber_objective(theta + step * unit, *data)[0] - huber_objective(theta - step * unit, *data)[0])
        / (2 * step)
        for unit in np.eye(5)
    ]
    np.testing.assert_allclose(huber_objective(theta, *data)[1], central, rtol=1e-5, atol=1e-10)


def test_noiseless_grid_recovers_the_law_exactly():
    fit = fit_scaling_law(*grid_points(4), FitOptions(grid=SMALL_GRID, n_bootstrap=0))
    for key, value in TRUE.items():
        assert getattr(fit, key) == pytest.approx(value, rel=1e-4), key
    assert fit.objective < 1e-12 and fit.n_points == 16 and fit.ci == {}


@pytest.fixture(scope="module")
def noisy_fit() -> ScalingFit:
    """0.5% noise on 36 points. Over 20 seeds the worst errors were E 1.3%, alpha 0.010, beta 0.024,
    log A 0.17, log B 0.49 (A and B trade off against the exponents), and every 95% CI held the truth."""
    return fit_scaling_law(
        *grid_points(6, noise=0.005, seed=0), FitOptions(grid=SMALL_GRID, n_bootstrap=100, seed=0)
    )


def test_noisy_grid_recovers_the_law(noisy_fit):
    assert noisy_fit.E == pytest.approx(TRUE["E"], rel=0.03)
    assert noisy_fit.alpha == pytest.approx(TRUE["alpha"], abs=0.05)
    assert noisy_fit.beta == pytest.approx(TRUE["beta"], abs=0.05)
    for key in ("A", "B"):
        assert abs(math.log(getattr(noisy_fit, key) / TRUE[key])) < math.log(2), key
    n, d, _ = grid_points(6)
    np.testing.assert_allclose(noisy_fit.predict(n, d), true_loss(n, d), rtol=0.005)


def test_bootstrap_intervals_cover_the_truth(noisy_fit):
    assert noisy_fit.ci_level == 0.95 and noisy_fit.bootstrap.shape == (100, 5)
    for key, value in TRUE.items():
        lo, hi = noisy_fit.ci[key]
        assert lo <= value <= hi, f"{key}: {value} outside [{lo}, {hi}]"
        assert lo <= getattr(noisy_fit, key) <= hi, key


def test_fit_is_the_best_of_the_grid():
    """A start far from the law alone lands in a worse basin; the grid's best start wins."""
    points = grid_points(4, noise=0.005)
    far = InitGrid(alpha=(2.0,), beta=(0.0,), e=(1.0,), a=(25.0,), b=(0.0,))
    worse = fit_scaling_law(*points, FitOptions(grid=far, n_bootstrap=0))
    both = InitGrid(alpha=(2.0, 0.5), beta=(0.0, 0.5), e=(1.0,), a=(25.0, 5.0), b=(0.0, 5.0))
    best = fit_scaling_law(*points, FitOptions(grid=both, n_bootstrap=0))
    assert best.objective < worse.objective
    assert best.alpha == pytest.approx(TRUE["alpha"], abs=0.05)


@pytest.mark.parametrize("compute", [1e19, 5.76e23])
def test_compute_optimal_is_the_minimum_along_the_budget(noisy_fit, compute):
    optimum = noisy_fit.compute_optimal(compute)
    along_budget = minimize_scalar(
        lambda log_n: noisy_fit.predict(np.exp(log_n), compute / (6 * np.exp(log_n))),
        bounds=(np.log(1e5), np.log(1e14)),
        method="bounded",
        options={"xatol": 1e-9},
    )
    assert optimum.n == pytest.approx(np.exp(along_budget.x), rel=1e-5)
    assert optimum.loss == pytest.approx(along_budget.fun, rel=1e-9)
    assert 6 * optimum.n * optimum.d == pytest.approx(compute)
    for key, value in (("N", optimum.n), ("D", optimum.d), ("loss", optimum.loss)):
        lo, hi = optimum.ci[key]
        assert lo <= value <= hi, key


def isoflop_points(budgets, seed: int = 0):
    """7 sizes per budget spanning 25x around the true optimum, the window shifted at random
    per budget (a real ladder is not centred on the optimum) and each C jittered by up to 1%."""
    rng = np.random.default_rng(seed)
    total = TRUE["alpha"] + TRUE["beta"]
    scale = (TRUE["alpha"] * TRUE["A"] / (TRUE["beta"] * TRUE["B"])) ** (1 / total)
    rows = []
    for compute in budgets:
        n_opt = scale * (compute / 6) ** (TRUE["beta"] / total)
        for offset in np.linspace(-0.7, 0.7, 7) + rng.uniform(-0.2, 0.2):
            n = n_opt * 10**offset
            d = compute * (1 + rng.uniform(-0.01, 0.01)) / (6 * n)
            rows.append((n, d, float(true_loss(n, d))))
    return [np.array(column) for column in zip(*rows)]


def test_isoflop_recovers_the_optimal_exponents():
    result = fit_isoflop(*isoflop_points(np.logspace(18, 22, 5)), rtol=0.05)
    total = TRUE["alpha"] + TRUE["beta"]
    assert len(result.budgets) == 5 and result.skipped == ()
    # Measured error 9e-5: loss along a budget has the same shape in log(N / N_opt) at every C, so
    # the parabola's bias in N_opt is nearly a constant factor, which moves the coefficient only.
    assert result.a == pytest.approx(TRUE["beta"] / total, abs=0.005)
    assert result.b == pytest.approx(TRUE["alpha"] / total, abs=0.005)
    assert all(budget.n_runs == 7 for budget in result.budgets)


def test_isoflop_skips_a_budget_with_too_few_sizes_and_names_it():
    n, d, loss = isoflop_points(np.logspace(18, 22, 5))
    keep = np.ones(len(n), dtype=bool)
    keep[-5:] = False  # the 1e22 budget keeps 2 of its 7 sizes
    with pytest.warns(UserWarning, match=r"budget C=1e\+22: 2 model sizes"):
        result = fit_isoflop(n[keep], d[keep], loss[keep])
    assert len(result.budgets) == 4 and len(result.skipped) == 1


def test_isoflop_needs_two_budgets():
    n, d, loss = isoflop_points([1e20])
    with pytest.raises(IsoFlopUnavailable, match="at least 2 budgets"):
        fit_isoflop(n, d, loss)


# --- lmpipe sweep fit ---------------------------------------------------------------------------


def sweep(argv: list[str]) -> int:
    """``lmpipe sweep ...`` through the parser that pipeline/cli.py extends, minus its error printing."""
    parser = argparse.ArgumentParser(prog="lmpipe")
    add_sweep_parser(parser.add_subparsers())
    args = parser.parse_args(["sweep", *argv])
    return args.run(args)


@pytest.fixture
def small_grid(monkeypatch):
    """The CLI fits with Hoffmann et al.'s 4,500 starts; 8 keep these tests under a second each."""
    monkeypatch.setattr(fit_module, "FitOptions", functools.partial(FitOptions, grid=SMALL_GRID))


def write_csv(path: Path, header: list[str], rows) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def runs_csv(path: Path, tokens: bool) -> Path:
    """IsoFLOP-shaped runs (5 budgets x 7 sizes), with C or D, and a column the fit ignores."""
    n, d, loss = isoflop_points(np.logspace(18, 22, 5))
    second = d if tokens else 6 * n * d
    return write_csv(
        path,
        ["run", "Model Size", "Tokens" if tokens else "Training FLOP", "loss"],
        [(f"r{i}", *row) for i, row in enumerate(zip(n, second, loss))],
    )


@pytest.mark.parametrize(
    "column", [["--c-col", "Training FLOP"], ["--d-col", "Tokens"]], ids=["c-col", "d-col"]
)
def test_sweep_fit_writes_fit_json(small_grid, tmp_path, capsys, column):
    source = runs_csv(tmp_path / "runs.csv", tokens=column[0] == "--d-col")
    output = tmp_path / "out" / "fit.json"
    assert (
        sweep(
            [
                "fit",
                "--csv",
                str(source),
                "--n-col",
                "Model Size",
                *column,
                "--loss-col",
                "loss",
                "--output",
                str(output),
                "--n-bootstrap",
                "20",
            ]
        )
        == 0
    )
    result = json.loads(output.read_text())
    assert {"E", "A", "B", "alpha", "beta", "ci", "n_points", "objective", "isoflop"} <= set(result)
    assert all(isinstance(result[key], float) for key in TRUE)
    assert set(result["ci"]) == set(TRUE) and all(len(bounds) == 2 for bounds in result["ci"].values())
    assert result["n_points"] == 35 and result["n_bootstrap"] == 20
    assert result["alpha"] == pytest.approx(TRUE["alpha"], abs=0.01)
    assert result["isoflop"]["a"] == pytest.approx(TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"]), abs=0.02)
    out = capsys.readouterr().out
    assert "alpha" in out and "IsoFLOP (5 budgets)" in out and f"wrote {output}" in out


def test_sweep_fit_without_budgets_notes_it_once(small_grid, tmp_path, capsys):
    # Steps of 10x in N and 12.6x in D: no two runs share a compute budget.
    n, d = (x.ravel() for x in np.meshgrid(np.logspace(7, 10, 4), 10 ** (9 + 1.1 * np.arange(4))))
    source = write_csv(tmp_path / "grid.csv", ["N", "D", "loss"], zip(n, d, true_loss(n, d)))
    output = tmp_path / "fit.json"
    assert (
        sweep(["fit", "--csv", str(source), "--d-col", "D", "--output", str(output), "--n-bootstrap", "0"])
        == 0
    )
    assert "isoflop" not in json.loads(output.read_text())
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no IsoFLOP fit" in err


def test_sweep_fit_min_d_leaves_out_the_shorter_runs_and_says_how_many(small_grid, tmp_path, capsys):
    """Runs under min_d tokens (too short to follow the law) are off the law by 10%; left out, the fit
    recovers it, and stderr counts what was left out."""
    n, d = (x.ravel() for x in np.meshgrid(np.logspace(7, 10, 4), 10 ** (9 + 1.1 * np.arange(4))))
    loss = true_loss(n, d) * np.where(d < 1e10, 1.1, 1.0)
    source = write_csv(tmp_path / "grid.csv", ["N", "D", "loss"], zip(n, d, loss))
    output = tmp_path / "fit.json"
    args = ["fit", "--csv", str(source), "--d-col", "D", "--output", str(output), "--n-bootstrap", "0"]
    assert sweep([*args, "min_d=1e10"]) == 0
    fit = json.loads(output.read_text())
    assert fit["n_points"] == 12 and fit["alpha"] == pytest.approx(TRUE["alpha"], rel=1e-3)
    assert "4 point(s) under min_d=1e+10 tokens left out" in capsys.readouterr().err


def test_sweep_fit_names_a_few_skipped_budgets_and_counts_the_rest(small_grid, tmp_path, capsys):
    n, d, loss = isoflop_points(np.logspace(18, 22, 5))
    lone_n = np.array([3e7, 3e8, 3e9, 3e10, 3e11])  # one run each at budgets between the IsoFLOP ones
    lone_d = np.logspace(18.5, 22.5, 5) / (6 * lone_n)
    rows = zip(np.r_[n, lone_n], np.r_[d, lone_d], np.r_[loss, true_loss(lone_n, lone_d)])
    source = write_csv(tmp_path / "runs.csv", ["N", "D", "loss"], rows)
    output = tmp_path / "fit.json"
    assert (
        sweep(["fit", "--csv", str(source), "--d-col", "D", "--output", str(output), "--n-bootstrap", "0"])
        == 0
    )
    assert len(json.loads(output.read_text())["isoflop"]["skipped"]) == 5
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4 and all("1 model size" in line for line in err[:3])
    assert "2 more budget(s) skipped" in err[3] and str(output) in err[3]


GOOD = [(1e8, 2e9, 3.1), (2e8, 4e9, 2.9), (4e8, 8e9, 2.7), (8e8, 1.6e10, 2.6), (1.6e9, 3.2e10, 2.5)]


@pytest.mark.parametrize(
    "rows, flags, expected",
    [
        (GOOD, ["--d-col", "tokens"], "no column 'tokens'; its columns are 'N', 'D', 'loss'"),
        (
            GOOD[:2] + [(4e8, 8e9, "n/a")] + GOOD[3:],
            ["--d-col", "D"],
            "line 4, column 'loss': 'n/a' is not a number",
        ),
        (
            GOOD[:1] + [(-2e8, 4e9, 2.9)] + GOOD[2:],
            ["--d-col", "D"],
            "line 3, column 'N': '-200000000.0' must be a positive number",
        ),
        (GOOD[:4] + [(1.6e9, 0, 2.5)], ["--d-col", "D"], "line 6, column 'D': '0' must be a positive number"),
        (GOOD[:3] + [(8e8, "", 2.6)] + GOOD[4:], ["--d-col", "D"], "line 5, column 'D': empty cell"),
        (
            GOOD[:4],
            ["--d-col", "D"],
            "need at least 5 points to fit 5 parameters (E, A, B, alpha, beta); got 4",
        ),
        (GOOD, ["--d-col", "D", "--c-col", "D"], "(--c-col) or the tokens column (--d-col), one of the two"),
        (GOOD, [], "(--c-col) or the tokens column (--d-col), one of the two"),
        (GOOD, ["--d-col", "D", "ci_level=1.5"], "ci_level: must be between 0 and 1"),
    ],
    ids=[
        "missing-column",
        "non-numeric",
        "negative-N",
        "zero-D",
        "empty-cell",
        "too-few-points",
        "both-c-and-d",
        "neither-c-nor-d",
        "bad-config",
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, rows, flags, expected):
    source = write_csv(tmp_path / "runs.csv", ["N", "D", "loss"], rows)
    with pytest.raises(USER_ERRORS) as info:
        sweep(["fit", "--csv", str(source), "--output", str(tmp_path / "fit.json"), *flags])
    message = str(info.value)
    assert expected in message and "\n" not in message
    assert not (tmp_path / "fit.json").exists()


def test_missing_csv_is_named(tmp_path):
    missing = tmp_path / "nowhere.csv"
    with pytest.raises(FileNotFoundError, match="runs CSV not found: .*nowhere.csv"):
        sweep(["fit", "--csv", str(missing), "--c-col", "C"])


def test_two_sweeps_of_one_grid_fit_each_points_best_run(small_grid, tmp_path):
    """Two batch sizes swept over the same (N, D) grid: ``--best-per-point`` fits the lower loss of each
    point, exactly as the one-row-per-point table of those runs does; without it every row counts."""
    n, d = (x.ravel() for x in np.meshgrid(np.logspace(7, 9, 3), np.logspace(9, 11, 3)))
    better = true_loss(n, d)
    worse = better + np.linspace(0.01, 0.3, len(n))
    mixed = np.where(np.arange(len(n)) % 2 == 0, better, worse)  # each table wins at some points
    other = np.where(np.arange(len(n)) % 2 == 0, worse, better)
    first = write_csv(tmp_path / "b8.csv", ["N", "D", "loss"], zip(n, d, mixed))
    second = write_csv(tmp_path / "b2.csv", ["N", "D", "loss"], zip(n, d, other))
    points = write_csv(tmp_path / "points.csv", ["N", "D", "loss"], zip(n, d, better))

    def fit(*args: str) -> dict:
        output = tmp_path / f"fit{len(list(tmp_path.glob('fit*.json')))}.json"
        assert sweep(["fit", *args, "--output", str(output), "--n-bootstrap", "0"]) == 0
        return json.loads(output.read_text())

    best = fit("--csv", str(first), str(second), "--d-col", "D", "--best-per-point")
    reference = fit("--csv", str(points), "--d-col", "D")
    assert best["n_points"] == len(n)
    assert {key: best[key] for key in TRUE} == {key: reference[key] for key in TRUE}
    assert fit("--csv", str(first), str(second), "--d-col", "D")["n_points"] == 2 * len(n)
    with pytest.raises(USER_ERRORS, match=r"b8\.csv: no column 'C'"):
        fit("--csv", str(first), str(second), "--c-col", "C")


def test_seeds_of_one_run_are_averaged_before_the_best_learning_rate_is_picked(small_grid, tmp_path, capsys):
    """``--average-seeds``: rows of one (N, D, lr) are replicates; the point's loss is their mean, and the
    best learning rate is chosen between the runs of the most seeds, so another learning rate's single
    seed does not win by luck. Without the flag the luckiest row wins each point."""
    n, d = (x.ravel() for x in np.meshgrid(np.logspace(7, 9, 3), np.logspace(9, 11, 3)))
    truth = true_loss(n, d)
    rows = []
    for i, (size, tokens, loss) in enumerate(zip(n, d, truth)):
        noise = 0.02 * (1 + i % 3)
        rows += [(size, tokens, 1e-3, loss + noise), (size, tokens, 1e-3, loss - noise)]  # mean: the law
        rows.append((size, tokens, 2e-3, loss - 0.5 * noise))  # one seed only: below the mean, yet not picked
    table = write_csv(tmp_path / "runs.csv", ["N", "D", "lr", "loss"], rows)
    points = write_csv(tmp_path / "points.csv", ["N", "D", "loss"], zip(n, d, truth))

    def fit(*args: str) -> dict:
        output = tmp_path / f"fit{len(list(tmp_path.glob('fit*.json')))}.json"
        assert sweep(["fit", "--d-col", "D", *args, "--output", str(output), "--n-bootstrap", "0"]) == 0
        return json.loads(output.read_text())

    averaged = fit("--csv", str(table), "--best-per-point", "--average-seeds")
    assert f"{len(n)} of {len(n)} points are means over 2 seeds" in capsys.readouterr().err
    reference = fit("--csv", str(points))
    assert averaged["n_points"] == len(n)
    assert {key: averaged[key] for key in TRUE} == pytest.approx({key: reference[key] for key in TRUE})
    lucky = fit("--csv", str(table), "--best-per-point")  # each point's luckiest seed
    assert lucky["n_points"] == len(n) and lucky["E"] < averaged["E"]
    assert "seeds" not in capsys.readouterr().err
    with pytest.raises(USER_ERRORS, match=r"points\.csv: no column 'lr'"):
        fit("--csv", str(points), "--average-seeds")


def test_sweep_fit_draws_the_law_against_its_points(small_grid, tmp_path, capsys):
    """``--plots DIR``: the fitted curves per model size over the points, and fitted against observed, as
    PNG files (a law fitted over several sweeps' tables has no sweep of its own to plot it)."""
    source = runs_csv(tmp_path / "runs.csv", tokens=True)
    plots = tmp_path / "plots"
    columns = ["--n-col", "Model Size", "--d-col", "Tokens"]
    argv = ["fit", "--csv", str(source), *columns, "--n-bootstrap", "0", "--plots", str(plots)]
    assert sweep([*argv, "--output", str(tmp_path / "fit.json")]) == 0
    printed = capsys.readouterr().out
    for name in ("law_vs_tokens.png", "fit_vs_observed.png"):
        assert (plots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"wrote {plots / name}" in printed
