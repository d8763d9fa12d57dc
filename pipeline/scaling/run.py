"""Run a planned sweep: locally one run after another, or as one Slurm job array.

A run counts as finished when its ``result.json`` exists and its MLflow run is FINISHED; finished
runs are skipped, so an interrupted sweep is continued by running the same command again, and a
half-done run continues from its checkpoint (every run has ``checkpoint.resume=auto``).

The sweep has one MLflow parent run, created on first use and remembered in <root>/sweep.json;
every training run is its child (``tracking.parent_run_id``). When every run has finished, the
parent gets the plan, each run's final losses, the fit of L(N, D) (from 5 finished runs) and the plots.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.scaling.plan import SWEEP_STATE, Plan, PlannedRun, SweepConfig, read_parent_run_id

if TYPE_CHECKING:
    from pipeline.scaling.fit import FitOptions

MIN_FIT_RUNS = 5
"""L(N, D) has five parameters: fewer finished runs are not fitted."""


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

    @property
    def train_val_gap(self) -> float | None:
        """Final val minus last train loss: grows as a model starts to fit its (repeated) data."""
        if self.final_val_loss is None or not math.isfinite(self.last_train_loss):
            return None
        return self.final_val_loss - self.last_train_loss


def ensure_parent_run(cfg: SweepConfig) -> str:
    """The sweep's parent run id: the one in sweep.json, else a new run (recorded there)."""
    root = cfg.root_dir
    parent = read_parent_run_id(root)
    if parent:
        return parent
    from mlflow.tracking import MlflowClient

    from pipeline.train.tracking import _experiment_id

    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # "Creating initial tables..."
    uri = cfg.resolve_uri()
    client = MlflowClient(tracking_uri=uri)
    experiment_id = _experiment_id(client, cfg.experiment_name, root, uri)
    parent = client.create_run(experiment_id, run_name=cfg.name, tags={"sweep": cfg.name}).info.run_id
    root.mkdir(parents=True, exist_ok=True)
    (root / SWEEP_STATE).write_text(
        json.dumps(
            {"parent_run_id": parent, "tracking_uri": uri, "experiment": cfg.experiment_name}, indent=2
        )
        + "\n"
    )
    return parent


def finished_outcome(run: PlannedRun, uri: str) -> RunOutcome | None:
    """The run's outcome if it finished (result.json and a FINISHED MLflow run), else None."""
    result_file = Path(run.config).parent / "result.json"
    if not result_file.is_file():
        return None
    result = json.loads(result_file.read_text())
    run_id = result.get("mlflow_run_id")
    train_loss = result["last_train_loss"]
    if run_id:
        from mlflow.tracking import MlflowClient

        tracked = MlflowClient(tracking_uri=uri).get_run(run_id)
        if tracked.info.status != "FINISHED":
            return None
        # The last logged train/loss averages the final log window: the last step alone is one batch,
        # the same batch for every run of one D (one data order), which biases every gap at that D alike.
        train_loss = tracked.data.metrics.get("train/loss", train_loss)
    sources = result.get("data") or {}
    return RunOutcome(
        name=run.name,
        N=result["n_params"],
        D=result["tokens_seen"],
        final_val_loss=result["final_val_loss"],
        last_train_loss=train_loss,
        mlflow_run_id=run_id,
        epochs=max((source["epochs"] for source in sources.values()), default=None),
    )


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
        from pipeline.train.pretrain import train

        train(plan.configs[run.name])
        return
    from launch.torchrun import run_torchrun

    code = run_torchrun(["train", "--config", run.config], nproc_per_node=nproc_per_node)
    if code != 0:
        raise ValueError(
            f"run {run.name} failed (exit {code}); its log is above, rerun the sweep to continue it"
        )


def summarize(
    cfg: SweepConfig, plan: Plan, parent_run_id: str, *, fit_options: FitOptions | None = None
) -> Path | None:
    """Log the plan, every run's final losses, the fit (5+ runs; ``fit_options`` default: Hoffmann et al.'s
    start grid, 200 bootstrap refits) and the plots on the parent run, and close it; returns fit.json's
    path, or None when there were too few runs to fit."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from pipeline.scaling.fit import FitOptions
    from pipeline.scaling.plots import write_plots
    from pipeline.train.tracking import mlflow_key

    root, uri = cfg.root_dir, cfg.resolve_uri()
    outcomes = load_outcomes(cfg, plan)
    client = MlflowClient(tracking_uri=uri)
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
    tag_data_use(client, outcomes)
    repeating = [o.name for o in outcomes if o.epochs and o.epochs > 1]
    if repeating:
        print(
            f"sweep {cfg.name}: {len(repeating)} run(s) repeated their data (epochs > 1): {', '.join(repeating)}; "
            "the fit counts their D as if every token were new",
            file=sys.stderr,
        )
    (root / "results.json").write_text(
        json.dumps([asdict(o) | {"train_val_gap": o.train_val_gap} for o in outcomes], indent=2) + "\n"
    )
    for name in ("plan.json", "plan.csv", "results.json"):
        client.log_artifact(parent_run_id, str(root / name))
    fit_path = None
    usable = [o for o in outcomes if o.final_val_loss is not None and math.isfinite(o.final_val_loss)]
    if len(usable) >= MIN_FIT_RUNS:
        fit_path = write_fit(usable, root / "fit.json", fit_options or FitOptions())
        client.log_artifact(parent_run_id, str(fit_path))
    else:
        print(
            f"sweep {cfg.name}: {len(usable)} finished run(s) with a val loss; the fit needs {MIN_FIT_RUNS}",
            file=sys.stderr,
        )
    for plot in write_plots(plan, outcomes, root / "plots", fit_file=fit_path):
        client.log_artifact(parent_run_id, str(plot), "plots")
    client.set_terminated(parent_run_id, "FINISHED")
    return fit_path


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
    import numpy as np

    from pipeline.scaling.fit import fit_scaling_law

    n, d, loss = (
        np.array([getattr(o, key) for o in outcomes], dtype=float) for key in ("N", "D", "final_val_loss")
    )
    fit = fit_scaling_law(n, d, loss, options)
    path.write_text(json.dumps(fit.to_json(), indent=2) + "\n")
    return path


def slurm_script(
    cfg: SweepConfig,
    plan: Plan,
    *,
    profile_path: str,
    profile_overrides: list[str],
    max_parallel: int,
    workdir: str,
) -> tuple[str, list[PlannedRun]]:
    """The sbatch script of one job array over the unfinished runs (element i trains the i-th), and those runs."""
    from launch.slurm import SlurmJob, render_sbatch
    from launch.slurm_profile import SlurmProfile

    profile = SlurmProfile.load(profile_path, profile_overrides)
    pending = pending_runs(cfg, plan)
    if not pending:
        raise ValueError(f"every run of sweep {cfg.name} has finished; nothing to submit")
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


def load_outcomes(cfg: SweepConfig, plan: Plan) -> list[RunOutcome]:
    """The finished runs' outcomes, in plan order."""
    uri = cfg.resolve_uri()
    return [outcome for run in plan.runs if (outcome := finished_outcome(run, uri)) is not None]


def pending_runs(cfg: SweepConfig, plan: Plan) -> list[PlannedRun]:
    uri = cfg.resolve_uri()
    return [run for run in plan.runs if finished_outcome(run, uri) is None]
