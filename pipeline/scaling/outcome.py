"""What a sweep's runs came to: a finished run's outcome as the summary, the fit, the plots and
``sweep plot`` read it, and which runs are still to do.

A run counts as finished when its ``result.json`` exists and its MLflow run is FINISHED.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.scaling.plan import Plan, PlannedRun, SweepConfig


@dataclass(frozen=True)
class RunOutcome:
    """A finished run's result.json, as the summary, the fit and the plots use it."""

    name: str
    N: int
    D: int
    final_val_loss: float | None
    last_train_loss: float
    """The run's last ``train/loss`` in MLflow (the mean of its final log window), else result.json's
    loss of the last step."""
    mlflow_run_id: str | None
    epochs: float | None = None
    """The most passes the run made over any source's training windows (result.json's ``data``); above
    1 it repeated data."""
    train_eval_loss: float | None = None
    """result.json's ``final_train_eval_loss``: the final weights on the first ``data.train_eval_windows``
    training samples; None when the run had it off."""
    val_loss_by_source: dict[str, float] = field(default_factory=dict)
    """The run's final ``val/loss/<source>`` metrics in MLflow (empty: one source, or no MLflow run)."""

    @property
    def train_val_gap(self) -> float | None:
        """Final val minus train eval loss (final weights on unseen vs seen data): grows as a model starts to
        fit its (repeated) data. Without a train eval loss, the fallback: final val minus the last train
        loss, a mean over batches taken while the weights still moved (``gap_from``)."""
        train = self.train_eval_loss if self.train_eval_loss is not None else self.last_train_loss
        if self.final_val_loss is None or not math.isfinite(train):
            return None
        return self.final_val_loss - train

    @property
    def gap_from(self) -> str:
        """Which train loss ``train_val_gap`` subtracts: ``train_eval``, or the fallback ``train``."""
        return "train_eval" if self.train_eval_loss is not None else "train"


def finished_outcome(run: PlannedRun, uri: str) -> RunOutcome | None:
    """The run's outcome if it finished (result.json and a FINISHED MLflow run), else None."""
    result_file = Path(run.config).parent / "result.json"
    if not result_file.is_file():
        return None
    result = json.loads(result_file.read_text())
    run_id = result.get("mlflow_run_id")
    train_loss = result["last_train_loss"]
    by_source: dict[str, float] = {}
    if run_id:
        from mlflow.tracking import MlflowClient

        tracked = MlflowClient(tracking_uri=uri).get_run(run_id)
        if tracked.info.status != "FINISHED":
            return None
        # The last logged train/loss averages the final log window: the last step alone is one batch,
        # the same batch for every run of one D (one data order), which biases every gap at that D alike.
        train_loss = tracked.data.metrics.get("train/loss", train_loss)
        prefix = "val/loss/"
        by_source = {
            key.removeprefix(prefix): value
            for key, value in tracked.data.metrics.items()
            if key.startswith(prefix)
        }
    sources = result.get("data") or {}
    return RunOutcome(
        name=run.name,
        N=result["n_params"],
        D=result["tokens_seen"],
        final_val_loss=result["final_val_loss"],
        last_train_loss=train_loss,
        mlflow_run_id=run_id,
        epochs=max((source["epochs"] for source in sources.values()), default=None),
        train_eval_loss=result.get("final_train_eval_loss"),  # absent from runs made before it existed
        val_loss_by_source=by_source,
    )


def load_outcomes(cfg: SweepConfig, plan: Plan) -> list[RunOutcome]:
    """The finished runs' outcomes, in plan order."""
    uri = cfg.resolve_uri()
    return [outcome for run in plan.runs if (outcome := finished_outcome(run, uri)) is not None]


def pending_runs(cfg: SweepConfig, plan: Plan) -> list[PlannedRun]:
    uri = cfg.resolve_uri()
    return [run for run in plan.runs if finished_outcome(run, uri) is None]
