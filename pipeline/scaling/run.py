"""Run a planned sweep: locally one run after another, or as one Slurm job array.

A run counts as finished when its ``result.json`` exists and its MLflow run is FINISHED; finished
runs are skipped, so an interrupted sweep is continued by running the same command again, and a
half-done run continues from its checkpoint (every run has ``checkpoint.resume=auto``).

The sweep has one MLflow parent run, created on first use and remembered in <root>/sweep.json;
every training run is its child (``tracking.parent_run_id``). When every run has finished, the
parent gets the plan, each run's final losses, the tables (``results.py``), the fit of L(N, D) (from 5
finished points; a point trained at several learning rates counts with its best run) and the plots.
"""

from __future__ import annotations

import logging
import math
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from launch.slurm.profile import SlurmProfile
from launch.slurm.sbatch import SlurmJob, render_sbatch
from launch.torchrun import run_torchrun
from pipeline.core.errors import ConfigError, RunFailed
from pipeline.core.files import atomic_write_json
from pipeline.scaling.fit import FitOptions, fit_scaling_law
from pipeline.scaling.outcome import RunOutcome, load_outcomes, pending_runs
from pipeline.scaling.plan import SWEEP_STATE, Plan, PlannedRun, SweepConfig, read_parent_run_id
from pipeline.scaling.plots import write_plots
from pipeline.scaling.results import fitted_points, write_points_csv, write_runs_csv
from pipeline.train.pretrain import train
from pipeline.train.tracking import find_experiment_id, mlflow_key

MIN_FIT_RUNS = 5
"""L(N, D) has five parameters: fewer finished runs are not fitted."""


def ensure_parent_run(cfg: SweepConfig) -> str:
    """The sweep's parent run id: the one in sweep.json, else a new run (recorded there)."""
    root = cfg.root_dir
    parent = read_parent_run_id(root)
    if parent:
        return parent
    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # "Creating initial tables..."
    uri = cfg.resolve_uri()
    client = MlflowClient(tracking_uri=uri)
    experiment_id = find_experiment_id(client, cfg.experiment_name, root, uri)
    parent = client.create_run(experiment_id, run_name=cfg.name, tags={"sweep": cfg.name}).info.run_id
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        root / SWEEP_STATE, {"parent_run_id": parent, "tracking_uri": uri, "experiment": cfg.experiment_name}
    )
    return parent


def run_local(cfg: SweepConfig, plan: Plan, *, max_runs: int = 0) -> list[str]:
    """Train the unfinished runs one after another (at most ``max_runs``, 0: all); returns those left."""
    pending = pending_runs(cfg, plan)
    done = len(plan.runs) - len(pending)
    if done:
        print(f"sweep {cfg.name}: {done} of {len(plan.runs)} runs already finished, skipped", flush=True)
    for index, run in enumerate(pending):
        if max_runs and index == max_runs:
            return [r.name for r in pending[index:]]
        print(
            f"sweep {cfg.name}: run {done + index + 1}/{len(plan.runs)}: {run.name} "
            f"(N={run.N:,}, D={run.D:,}, {run.steps} steps)",
            flush=True,
        )
        _train(run, plan, nproc_per_node=cfg.nproc_per_node)
    return []


def _train(run: PlannedRun, plan: Plan, *, nproc_per_node: int) -> None:
    if nproc_per_node == 1:
        train(plan.configs[run.name])
        return
    code = run_torchrun(["train", "--config", run.config], nproc_per_node=nproc_per_node)
    if code != 0:
        raise RunFailed(
            f"run {run.name} failed (exit {code}); its log is above, rerun the sweep to continue it"
        )


def summarize(
    cfg: SweepConfig, plan: Plan, parent_run_id: str, *, fit_options: FitOptions | None = None
) -> Path | None:
    """Log the plan, every run's final losses, the fit (5+ runs; ``fit_options`` default: Hoffmann et al.'s
    start grid, 200 bootstrap refits) and the plots on the parent run, and close it; returns fit.json's
    path, or None when there were too few runs to fit."""
    from mlflow.tracking import MlflowClient

    root, uri = cfg.root_dir, cfg.resolve_uri()
    outcomes = load_outcomes(cfg, plan)
    client = MlflowClient(tracking_uri=uri)
    log_final_losses(client, parent_run_id, outcomes)
    tag_data_use(client, outcomes)
    repeating = [o.name for o in outcomes if o.epochs and o.epochs > 1]
    if repeating:
        print(
            f"sweep {cfg.name}: {len(repeating)} run(s) repeated their data (epochs > 1): "
            f"{', '.join(repeating)}; "
            "the fit counts their D as if every token were new",
            file=sys.stderr,
        )
    atomic_write_json(
        root / "results.json", [asdict(o) | {"train_val_gap": o.train_val_gap} for o in outcomes]
    )
    for name in ("plan.json", "plan.csv", "results.json"):
        client.log_artifact(parent_run_id, str(root / name))
    fit_path = None
    points = fitted_points(plan, outcomes)
    tables = (
        write_runs_csv(plan, outcomes, points, root / "runs.csv"),
        write_points_csv(plan, points, root / "fit_points.csv"),
    )
    for table in tables:
        client.log_artifact(parent_run_id, str(table))
    if len(points) >= MIN_FIT_RUNS:
        fit_path = write_fit(points, root / "fit.json", fit_options or FitOptions())
        client.log_artifact(parent_run_id, str(fit_path))
    else:
        print(
            f"sweep {cfg.name}: {len(points)} (model, data size) point(s) with a val loss; "
            f"the fit needs {MIN_FIT_RUNS}",
            file=sys.stderr,
        )
    for plot in write_plots(plan, outcomes, root / "plots", fit_file=fit_path):
        client.log_artifact(parent_run_id, str(plot), "plots")
    client.set_terminated(parent_run_id, "FINISHED")
    return fit_path


def log_final_losses(client: Any, parent_run_id: str, outcomes: list[RunOutcome]) -> None:
    """Every run's final val and train loss and their gap, as metrics of the parent run."""
    from mlflow.entities import Metric

    metrics = {f"final_val_loss/{o.name}": o.final_val_loss for o in outcomes if o.final_val_loss is not None}
    metrics.update(
        {
            f"final_train_loss/{o.name}": o.last_train_loss
            for o in outcomes
            if math.isfinite(o.last_train_loss)
        }
    )
    metrics.update(
        {f"train_val_gap/{o.name}": o.train_val_gap for o in outcomes if o.train_val_gap is not None}
    )
    client.log_batch(
        parent_run_id, metrics=[Metric(mlflow_key(key), value, 0, 0) for key, value in metrics.items()]
    )


def tag_data_use(client: Any, outcomes: list[RunOutcome]) -> None:
    """Tag each child run with its epochs (``repeats_data`` when above 1) and log its train/val gap,
    so that ``sweep compare`` and the MLflow UI show the data-constrained runs."""
    from mlflow.entities import Metric, RunTag

    for outcome in outcomes:
        if not outcome.mlflow_run_id:
            continue
        tags = (
            []
            if outcome.epochs is None
            else [
                RunTag("epochs", f"{outcome.epochs:.4g}"),
                RunTag("repeats_data", str(outcome.epochs > 1).lower()),
            ]
        )
        gap = outcome.train_val_gap
        metrics = [] if gap is None else [Metric("train_val_gap", gap, 0, 0)]
        client.log_batch(outcome.mlflow_run_id, metrics=metrics, tags=tags)


def write_fit(outcomes: list[RunOutcome], path: Path, options: FitOptions) -> Path:
    n, d, loss = (
        np.array([getattr(o, key) for o in outcomes], dtype=float) for key in ("N", "D", "final_val_loss")
    )
    fit = fit_scaling_law(n, d, loss, options)
    return atomic_write_json(path, fit.to_json())


def slurm_script(
    cfg: SweepConfig,
    plan: Plan,
    *,
    profile_path: str,
    profile_overrides: list[str],
    max_parallel: int,
    workdir: str,
) -> tuple[str, list[PlannedRun]]:
    """The sbatch script of one job array over the unfinished runs (element i trains the i-th), and those
    runs."""
    profile = SlurmProfile.load(profile_path, profile_overrides)
    pending = pending_runs(cfg, plan)
    if not pending:
        raise ConfigError(f"every run of sweep {cfg.name} has finished; nothing to submit")
    for run in pending:  # a batch the profile's ranks cannot split fails here, not in the queue
        plan.configs[run.name].train.grad_accum_steps(profile.world_size)
    job = SlurmJob(
        ("train",),
        f"sweep-{cfg.name}",
        workdir,
        tuple(str(Path(run.config).resolve()) for run in pending),
        max_parallel,
    )
    return render_sbatch(profile, job), pending
