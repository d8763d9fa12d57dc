"""A finished sweep as tables: every run (``runs.csv``) and the points the law is fitted to
(``fit_points.csv``), written beside fit.json so the fit can be redone from the file alone
(``lmpipe sweep fit --csv fit_points.csv --d-col D``).

With a learning-rate or batch-size sweep (``lr_multipliers``, ``global_batch_sizes``) each (model, data
size) point is trained several times; the point's loss is the best of them, as Chinchilla and Porian
et al. (2024) take it: the law describes well-tuned runs, not the lr and batch rules' luck at each size.
The ``best_of_lr`` column of runs.csv (named when lr was the only axis) marks that best run.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from pipeline.scaling.outcome import RunOutcome, load_outcomes
from pipeline.scaling.plan import Plan, PlannedRun, SweepConfig, plan_sweep

POINT_COLUMNS = ("name", "model", "N", "D", "C", "lr", "global_batch_size", "loss")
"""fit_points.csv: one row per (model, data point), its best run."""


def fitted_points(plan: Plan, outcomes: list[RunOutcome]) -> list[RunOutcome]:
    """What the law is fitted to: of the runs with a finite final val loss, each point's best."""
    usable = [o for o in outcomes if o.final_val_loss is not None and math.isfinite(o.final_val_loss)]
    return best_per_point(plan, usable)


def best_per_point(plan: Plan, outcomes: list[RunOutcome]) -> list[RunOutcome]:
    """Per (model, data point), the finished run with the lowest final val loss whatever its batch and lr
    (runs without one are left out), in plan order. The point, not D: D is rounded to whole steps of each
    run's batch, so a point's runs at different batch sizes may differ in D by a step."""
    planned = {run.name: run for run in plan.runs}
    best: dict[tuple[str, str], RunOutcome] = {}
    for outcome in outcomes:
        if outcome.final_val_loss is None:
            continue
        key = (planned[outcome.name].model, planned[outcome.name].point)
        if key not in best or outcome.final_val_loss < (best[key].final_val_loss or float("inf")):
            best[key] = outcome
    chosen = {outcome.name for outcome in best.values()}
    return [outcome for outcome in outcomes if outcome.name in chosen]


def finished_points(config_file: str) -> tuple[list[RunOutcome], SweepConfig, Plan]:
    """The sweep of ``config_file``: each (model, data point)'s best finished run, the config, the plan."""
    cfg = SweepConfig.load(config_file)
    plan = plan_sweep(cfg)
    return fitted_points(plan, load_outcomes(cfg, plan)), cfg, plan


def write_points_csv(plan: Plan, points: list[RunOutcome], path: Path) -> Path:
    """The fitted points at full precision (``repr`` floats read back bit for bit)."""
    planned = {run.name: run for run in plan.runs}
    rows = [(*_identity(o, planned[o.name]), repr(o.final_val_loss)) for o in points]
    return _write(path, POINT_COLUMNS, rows)


def write_runs_csv(plan: Plan, outcomes: list[RunOutcome], points: list[RunOutcome], path: Path) -> Path:
    """Every finished run: its size, data, compute, learning rate and batch, final losses (overall and per
    source, from its MLflow run; train: the last logged, and on the seen windows if measured), the
    train/val gap and which train loss it used, epochs over its data, and whether it is its point's best."""
    planned = {run.name: run for run in plan.runs}
    per_source = {o.name: o.val_loss_by_source for o in outcomes}
    sources = sorted({source for losses in per_source.values() for source in losses})
    chosen = {o.name for o in points}
    header = (
        "name", "model", "N", "D", "C", "lr", "global_batch_size", "final_val_loss",
        *(f"val_loss_{source}" for source in sources),
        "final_train_loss", "train_eval_loss", "train_val_gap", "gap_from", "epochs", "best_of_lr",
    )  # fmt: skip
    rows = [
        (
            *_identity(o, planned[o.name]),
            _cell(o.final_val_loss),
            *(_cell(per_source[o.name].get(source)) for source in sources),
            _cell(o.last_train_loss),
            _cell(o.train_eval_loss),
            _cell(o.train_val_gap),
            o.gap_from,
            _cell(o.epochs),
            str(o.name in chosen).lower(),
        )
        for o in outcomes
    ]
    return _write(path, header, rows)


def _identity(outcome: RunOutcome, planned: PlannedRun) -> tuple:
    """The first columns of both tables: name, model, N, D, C = 6ND, the run's learning rate and batch."""
    return (
        outcome.name,
        planned.model,
        outcome.N,
        outcome.D,
        6 * outcome.N * outcome.D,
        repr(planned.lr),
        planned.global_batch_size,
    )


def _cell(value: Any) -> str:
    return "" if value is None else repr(value)


def _write(path: Path, header: tuple[str, ...], rows: list[tuple]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path
