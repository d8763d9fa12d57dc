"""Predict a run from fit.json before training it, keep the record, then verify it against the run:
``lmpipe sweep predict`` and ``lmpipe sweep verify``, through the real CLI and a real MLflow store."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from pipeline.cli.main import main
from pipeline.core.files import atomic_write_json
from pipeline.scaling.fit import FitOptions, InitGrid, ScalingFit, fit_scaling_law
from pipeline.scaling.plan import SweepConfig
from pipeline.scaling.run import ensure_parent_run

LAW = {"E": 1.8, "A": 400.0, "B": 2000.0, "alpha": 0.34, "beta": 0.37}
GRID = InitGrid(alpha=(0.5,), beta=(0.5,), e=(0.0, 1.0), a=(5.0, 10.0), b=(5.0, 10.0))


def law(n, d):
    return LAW["E"] + LAW["A"] / np.asarray(n) ** LAW["alpha"] + LAW["B"] / np.asarray(d) ** LAW["beta"]


@pytest.fixture(scope="module")
def fit_file(tmp_path_factory):
    """A fit of a 5 x 5 grid with 1% noise and 50 bootstrap refits."""
    n, d = (x.ravel() for x in np.meshgrid(np.logspace(7, 9, 5), np.logspace(9, 11, 5)))
    loss = law(n, d) * np.exp(0.01 * np.random.default_rng(0).standard_normal(n.shape))
    fit = fit_scaling_law(n, d, loss, FitOptions(grid=GRID, n_bootstrap=50))
    return atomic_write_json(tmp_path_factory.mktemp("fit") / "fit.json", fit.to_json())


def finished_run(directory, *, n, d, loss, seconds=1.0):
    """What a finished training job leaves: its result.json."""
    directory.mkdir(parents=True, exist_ok=True)
    result = {"n_params": n, "tokens_seen": d, "final_val_loss": loss, "seconds": seconds}
    (directory / "result.json").write_text(json.dumps(result))
    return directory


def test_fit_json_keeps_its_refits_and_reads_back(fit_file):
    fit = ScalingFit.from_json(json.loads(fit_file.read_text()))
    assert fit.bootstrap.shape == (50, 5)
    loss, (lo, hi) = fit.predict_interval(4e9, 4e11)  # 4x beyond the grid in both N and D
    assert lo < loss < hi and lo < law(4e9, 4e11) < hi
    assert abs(loss / law(4e9, 4e11) - 1) < 0.02


def test_predict_prints_the_loss_with_its_interval_and_keeps_the_record(fit_file, tmp_path, capsys):
    record = tmp_path / "prediction.json"
    argv = ["sweep", "predict", "--fit", str(fit_file), "--n", "4e9", "--d", "4e11", "--output", str(record)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    prediction = json.loads(record.read_text())["prediction"]
    assert f"predicted final val loss {prediction['loss']:.4f} [" in out and "95% CI" in out
    assert prediction["N"] == 4e9 and prediction["D"] == 4e11 and prediction["C"] == 6 * 4e9 * 4e11
    assert len(prediction["fit_sha256"]) == 64 and prediction["made_at"].endswith("+00:00")
    assert main(argv) == 2  # a record is never replaced
    assert "already holds a prediction" in capsys.readouterr().err


def test_predict_at_a_budget_uses_the_compute_optimal_allocation(fit_file, capsys):
    assert main(["sweep", "predict", "--fit", str(fit_file), "--compute", "1e22"]) == 0
    optimum = ScalingFit.from_json(json.loads(fit_file.read_text())).compute_optimal(1e22)
    out = capsys.readouterr().out
    assert f"compute-optimal at N={optimum.n:,.0f}, D={optimum.d:,.0f}" in out
    assert f"{optimum.loss:.4f}" in out


@pytest.mark.parametrize(
    "argv", [["--n", "1e9"], ["--n", "1e9", "--d", "1e10", "--compute", "1e20"]], ids=["no-d", "both"]
)
def test_predict_wants_a_size_or_a_budget(fit_file, argv, capsys):
    assert main(["sweep", "predict", "--fit", str(fit_file), *argv]) == 2
    assert "--compute" in capsys.readouterr().err


def test_verify_compares_adds_the_verdict_and_logs_on_the_sweeps_parent(fit_file, tmp_path, capsys):
    record = tmp_path / "prediction.json"
    assert (
        main(
            ["sweep", "predict", "--fit", str(fit_file), "--n", "4e9", "--d", "4e11", "--output", str(record)]
        )
        == 0
    )
    predicted = json.loads(record.read_text())["prediction"]
    observed = predicted["loss"] * 1.01
    run = finished_run(tmp_path / "big", n=4_000_000_000, d=400_000_000_000, loss=observed)
    a_minute_on = time.time() + 60
    os.utime(
        run / "result.json", (a_minute_on, a_minute_on)
    )  # trained after the prediction: 1 s, a minute on
    sweep_yaml = tmp_path / "sweep.yaml"
    sweep_yaml.write_text(
        f"name: s\nroot: {tmp_path / 'sweep'}\ntracking_uri: sqlite:///{tmp_path / 'mlflow.db'}\n"
        "models: [{name: m, d_model: 64, n_layers: 2, n_heads: 2}]\ntokens: [1000]\n"
    )
    parent = ensure_parent_run(SweepConfig.load(str(sweep_yaml)))
    capsys.readouterr()
    argv = ["sweep", "verify", "--prediction", str(record), "--run", str(run), "--config", str(sweep_yaml)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    verdict = json.loads(record.read_text())["verification"]
    assert verdict["observed"] == observed and verdict["predicted_before_run"] is True
    assert verdict["relative_error"] == pytest.approx(-0.01 / 1.01)
    lo, hi = predicted["ci"]
    assert verdict["inside_ci"] is (lo <= observed <= hi)
    assert "relative error -0.99%" in out and f"logged on the parent run {parent}" in out

    from mlflow.tracking import MlflowClient

    logged = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(parent).data
    assert logged.metrics["prediction/loss"] == pytest.approx(predicted["loss"])
    assert logged.metrics["prediction/observed"] == pytest.approx(observed)
    assert logged.tags["prediction.inside_ci"] == str(verdict["inside_ci"]).lower()


def test_verify_refuses_another_run_and_flags_a_prediction_made_after_the_run(fit_file, tmp_path, capsys):
    record = tmp_path / "prediction.json"
    assert (
        main(
            ["sweep", "predict", "--fit", str(fit_file), "--n", "1e9", "--d", "1e11", "--output", str(record)]
        )
        == 0
    )
    other = finished_run(tmp_path / "other", n=500_000_000, d=100_000_000_000, loss=2.0)
    assert main(["sweep", "verify", "--prediction", str(record), "--run", str(other)]) == 2
    assert "not the predicted run" in capsys.readouterr().err

    early = finished_run(tmp_path / "early", n=1_000_000_000, d=100_000_000_000, loss=2.0, seconds=5.0)
    an_hour_ago = time.time() - 3600
    os.utime(early / "result.json", (an_hour_ago, an_hour_ago))  # it ran before the prediction
    assert main(["sweep", "verify", "--prediction", str(record), "--run", str(early)]) == 0
    assert "predicted AFTER the run started" in capsys.readouterr().out
    assert json.loads(record.read_text())["verification"]["predicted_before_run"] is False


def test_a_fit_without_refits_predicts_without_an_interval(tmp_path, capsys):
    n, d = (x.ravel() for x in np.meshgrid(np.logspace(7, 9, 3), np.logspace(9, 11, 3)))
    fit = fit_scaling_law(n, d, law(n, d), FitOptions(grid=GRID, n_bootstrap=0))
    path = atomic_write_json(tmp_path / "fit.json", fit.to_json())
    assert main(["sweep", "predict", "--fit", str(path), "--n", "1e8", "--d", "1e10"]) == 0
    assert "no interval" in capsys.readouterr().out


def test_verify_takes_the_best_of_the_learning_rates_tried(fit_file, tmp_path, capsys):
    """The fitted points are each the best of a few learning rates, so the predicted run is too."""
    record = tmp_path / "prediction.json"
    argv = ["sweep", "predict", "--fit", str(fit_file), "--n", "2e9", "--d", "2e11", "--output", str(record)]
    assert main(argv) == 0
    loss = json.loads(record.read_text())["prediction"]["loss"]
    later = time.time() + 60
    runs = {}
    for name, observed in (("lr0.25x", loss * 1.02), ("lr0.5x", loss * 0.995), ("lr1x", loss * 1.3)):
        runs[name] = finished_run(tmp_path / name, n=2_000_000_000, d=200_000_000_000, loss=observed)
        os.utime(runs[name] / "result.json", (later, later))
    verify = ["sweep", "verify", "--prediction", str(record)]
    assert main([*verify, *(arg for run in runs.values() for arg in ("--run", str(run)))]) == 0
    verdict = json.loads(record.read_text())["verification"]
    assert verdict["observed"] == loss * 0.995 and verdict["result_file"] == str(
        runs["lr0.5x"] / "result.json"
    )
    assert sorted(verdict["candidates"].values()) == sorted([loss * 1.02, loss * 0.995, loss * 1.3])
    assert "(the best of 3 runs)" in capsys.readouterr().out

    other = finished_run(tmp_path / "other", n=1_000_000_000, d=200_000_000_000, loss=loss * 0.5)
    assert main([*verify, "--run", str(runs["lr0.5x"]), "--run", str(other)]) == 2
    assert "not the predicted run" in capsys.readouterr().err
