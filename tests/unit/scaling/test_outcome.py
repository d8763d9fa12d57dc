"""A finished run's outcome: its train/val gap subtracts the train eval loss (the final weights on seen
training windows) when result.json has one, else the last train loss, and says which."""

from __future__ import annotations

import json

import pytest

from pipeline.scaling.outcome import finished_outcome
from pipeline.scaling.plan import PlannedRun


def outcome_of(tmp_path, **result):
    (tmp_path / "result.json").write_text(
        json.dumps({"n_params": 1000, "tokens_seen": 64000, "mlflow_run_id": None, **result})
    )
    planned = PlannedRun(
        name="a", model="a", N=1000, D=64000, C=6 * 1000 * 64000, budget=0.0, lr=1e-3,
        global_batch_size=8, seq_len=64, steps=125, warmup_steps=10, est_seconds=1.0,
        config=str(tmp_path / "config.yaml"),
    )  # fmt: skip
    return finished_outcome(planned, "sqlite:///unused.db")  # no MLflow run id: the store is not read


def test_the_gap_subtracts_the_train_eval_loss_when_the_run_has_one(tmp_path):
    measured = outcome_of(tmp_path, final_val_loss=3.0, last_train_loss=2.5, final_train_eval_loss=2.9)
    assert measured.train_eval_loss == 2.9 and measured.gap_from == "train_eval"
    assert measured.train_val_gap == pytest.approx(0.1)


@pytest.mark.parametrize("train_eval", [{"final_train_eval_loss": None}, {}])  # off, or an older result.json
def test_without_one_the_gap_falls_back_to_the_last_train_loss(tmp_path, train_eval):
    fallback = outcome_of(tmp_path, final_val_loss=3.0, last_train_loss=2.5, **train_eval)
    assert fallback.train_eval_loss is None and fallback.gap_from == "train"
    assert fallback.train_val_gap == pytest.approx(0.5)
    assert outcome_of(tmp_path, final_val_loss=None, last_train_loss=2.5).train_val_gap is None


def test_the_gap_plot_hatches_the_fallback_runs_and_says_so(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.scaling.plots import _train_val_gap

    measured = outcome_of(tmp_path, final_val_loss=3.0, last_train_loss=2.5, final_train_eval_loss=2.9)
    fallback = outcome_of(tmp_path, final_val_loss=3.0, last_train_loss=2.5)
    drawn = []
    _train_val_gap(plt, lambda fig, name: drawn.append(fig), [measured, fallback])
    ax = drawn[0].axes[0]
    assert [bar.get_height() for bar in ax.patches] == [pytest.approx(0.1), pytest.approx(0.5)]
    assert [bar.get_hatch() or "" for bar in ax.patches] == ["", "//"]
    assert [text.get_text() for text in ax.get_legend().get_texts()] == [
        "no train eval: val - last train loss"
    ]
    assert ax.get_ylabel() == "final val - train loss"
    plt.close("all")
