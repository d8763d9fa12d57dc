"""``lmpipe sweep compare`` and ``sweep fit --experiment`` on a real MLflow store holding runs tagged
the way training tags them (N, D, C, model_size; train/loss, val/loss, val/ppl, tokens_per_s, and for the
smallest model train_eval/loss: data.train_eval_windows)."""

from __future__ import annotations

import csv
import json
import math

import pytest

from pipeline.cli.main import main
from pipeline.scaling.fit import InitGrid

LAW = {"E": 1.8, "A": 400.0, "B": 2000.0, "alpha": 0.34, "beta": 0.37}
SIZES = {"s": 1e6, "m": 3e6, "l": 1e7}
TOKENS = (2e7, 6e7, 2e8)


# The CLI fits from Hoffmann et al.'s 4,500 starts (seconds); these 8 bracket the law above
# (a, b, e) = (6.0, 7.6, 0.59), as tests/unit/scaling/test_fit.py's SMALL_GRID does.
SMALL_GRID = InitGrid(alpha=(0.5,), beta=(0.5,), e=(0.0, 1.0), a=(5.0, 10.0), b=(5.0, 10.0))


@pytest.fixture
def small_grid(monkeypatch):
    """Every fit the CLI runs starts from SMALL_GRID instead of the full grid."""
    starts = SMALL_GRID.starts()
    monkeypatch.setattr(InitGrid, "starts", lambda self: starts)


def law(n: float, d: float) -> float:
    return LAW["E"] + LAW["A"] / n ** LAW["alpha"] + LAW["B"] / d ** LAW["beta"]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """Nine finished runs on a 3 x 3 grid of N x D (the s runs with a train eval loss), and one killed run
    without a final loss."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("sweep")
    for size, n in SIZES.items():
        for d in TOKENS:
            run = client.create_run(experiment, run_name=f"{size}-{d:.0e}").info.run_id
            client.set_tag(run, "N", str(int(n)))
            client.set_tag(run, "D", str(int(d)))
            client.set_tag(run, "C", str(int(6 * n * d)))
            client.set_tag(run, "model_size", size)
            client.set_tag(run, "epochs", str(d / 1e8))  # 1e8 tokens of data: the largest D repeats it
            loss = law(n, d)
            for key, value in {
                "train/loss": loss - 0.01,
                "val/loss": loss,
                "val/ppl": math.exp(loss),
                "tokens_per_s": 1e5 / n * 1e6,
                **({"train_eval/loss": loss - 0.03} if size == "s" else {}),
            }.items():
                client.log_metric(run, key, value, step=10)
            client.set_terminated(run, "FINISHED")
    killed = client.create_run(experiment, run_name="killed").info.run_id
    client.log_metric(killed, "train/loss", 5.0, step=1)
    client.set_terminated(killed, "KILLED")
    return uri


def test_compare_prints_every_run_sorted_and_writes_csv(store, tmp_path, capsys):
    out = tmp_path / "runs.csv"
    assert (
        main(
            [
                "sweep",
                "compare",
                "--experiment",
                "sweep",
                "--tracking-uri",
                store,
                "--sort",
                "val_loss",
                "--csv",
                str(out),
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["run", "size", "N"]
    names = [line.split()[0] for line in lines[1:11]]
    expected = sorted(((law(n, d), f"{s}-{d:.0e}") for s, n in SIZES.items() for d in TOKENS))
    assert names == [name for _, name in expected] + ["killed"]  # no val loss: last
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 10
    by_name = {row["name"]: row for row in rows}
    assert float(by_name["l-2e+08"]["val_loss"]) == pytest.approx(law(1e7, 2e8), rel=1e-12)
    assert by_name["killed"]["val_loss"] == "" and by_name["killed"]["status"] == "KILLED"
    assert (
        float(by_name["l-2e+08"]["gap"]) == pytest.approx(0.01) and float(by_name["l-2e+08"]["epochs"]) == 2.0
    )
    table = {line.split()[0]: line.split() for line in lines[1:11]}
    assert table["l-2e+08"][5:10] == [
        "2.00*",
        f"{law(1e7, 2e8) - 0.01:.4f}",
        "-",
        f"{law(1e7, 2e8):.4f}",
        "+0.0100~",  # no train eval loss: val - train loss, marked
    ]
    assert table["s-2e+07"][5:10] == [
        "0.20",
        f"{law(1e6, 2e7) - 0.01:.4f}",
        f"{law(1e6, 2e7) - 0.03:.4f}",
        f"{law(1e6, 2e7):.4f}",
        "+0.0300",  # val - train eval loss
    ]
    assert table["killed"][5] == "-" and table["killed"][9] == "-"
    assert lines[11].startswith("~ gap = val - train loss")
    assert (by_name["s-2e+07"]["gap_from"], by_name["l-2e+08"]["gap_from"]) == ("train_eval", "train")
    assert float(by_name["s-2e+07"]["gap"]) == pytest.approx(0.03) and by_name["killed"]["gap_from"] == ""


def test_fit_from_the_experiment_uses_the_finished_runs(store, tmp_path, capsys, small_grid):
    out = tmp_path / "fit.json"
    assert (
        main(
            [
                "sweep",
                "fit",
                "--experiment",
                "sweep",
                "--tracking-uri",
                store,
                "--output",
                str(out),
                "--n-bootstrap",
                "0",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "1 run(s) without a finished N, D and val/loss left out: killed" in captured.err
    fit = json.loads(out.read_text())
    assert fit["n_points"] == 9
    assert fit["E"] == pytest.approx(LAW["E"], rel=1e-3) and fit["alpha"] == pytest.approx(
        LAW["alpha"], abs=1e-3
    )


def test_fit_predicts_the_compute_optimal_model_at_given_budgets(store, tmp_path, capsys, small_grid):
    """N* = G (C/6)^(beta/(alpha+beta)) with G = (alpha A / (beta B))^(1/(alpha+beta)), D* = C / 6N*:
    the fitted law's answer is the true law's, since the points lie exactly on it."""
    out = tmp_path / "fit.json"
    assert (
        main(
            [
                "sweep",
                "fit",
                "--experiment",
                "sweep",
                "--tracking-uri",
                store,
                "--output",
                str(out),
                "--n-bootstrap",
                "20",
                "--compute",
                "1e21",
                "1e23",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    a, b = LAW["alpha"], LAW["beta"]
    g = (a * LAW["A"] / (b * LAW["B"])) ** (1 / (a + b))
    optima = json.loads(out.read_text())["compute_optimal"]
    assert [o["C"] for o in optima] == [1e21, 1e23]
    for o in optima:
        n_star = g * (o["C"] / 6) ** (b / (a + b))
        assert o["N"] == pytest.approx(n_star, rel=0.02) and o["D"] == pytest.approx(o["C"] / (6 * o["N"]))
        assert o["loss"] == pytest.approx(law(n_star, o["C"] / (6 * n_star)), rel=1e-3)
        low, high = o["ci"]["N"]  # noiseless points: every refit lands on the estimate, to rounding
        assert low == pytest.approx(o["N"], rel=1e-6) and high == pytest.approx(o["N"], rel=1e-6)
    assert "C=1e+21: N*=" in printed and "C=1e+23: N*=" in printed


def test_unknown_experiment_names_the_ones_there(store, capsys):
    assert main(["sweep", "compare", "--experiment", "swep", "--tracking-uri", store]) != 0
    err = capsys.readouterr().err
    assert "no MLflow experiment named 'swep'" in err and "it has: 'Default', 'sweep'" in err


def test_compare_needs_a_store(monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["sweep", "compare", "--experiment", "sweep"]) != 0
    assert "tracking_uri" in capsys.readouterr().err
