"""A finished sweep as tables: every run (``runs.csv``) and the points the law is fitted to
(``fit_points.csv``), written beside fit.json so the fit can be redone from the file alone
(``lmpipe sweep fit --csv fit_points.csv --d-col D``).

With a learning-rate sweep (``lr_multipliers``) each (model, data size) point is trained several
times; the point's loss is the best of them, as Chinchilla and Porian et al. (2024) take it: the
law describes well-tuned runs, not the lr rule's luck at each size.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from pipeline.scaling.outcome import RunOutcome, load_outcomes
from pipeline.scaling.plan import Plan, PlannedRun, SweepConfig, plan_sweep

POINT_COLUMNS = ("name", "model", "N", "D", "C", "lr", "loss")
"""fit_points.csv: one row per (model, data size), its best run."""


def fitted_points(plan: Plan, outcomes: list[RunOutcome]) -> list[RunOutcome]:
    """What the law is fitted to: of the runs with a finite final val loss, each point's best."""
    usable = [o for o in outcomes if o.final_val_loss is not None and math.isfinite(o.final_val_loss)]
    return best_per_point(plan, usable)


def best_per_point(plan: Plan, outcomes: list[RunOutcome]) -> list[RunOutcome]:
    """Per (model, D), the finished run with the lowest final val loss (runs without one are left out),
    in plan order."""
    planned = {run.name: run for run in plan.runs}
    best: dict[tuple[str, int], RunOutcome] = {}
    for outcome in outcomes:
        if outcome.final_val_loss is None:
            continue
        key = (planned[outcome.name].model, planned[outcome.name].D)
        if key not in best or outcome.final_val_loss < (best[key].final_val_loss or float("inf")):
            best[key] = outcome
    chosen = {outcome.name for outcome in best.values()}
    return [outcome for outcome in outcomes if outcome.name in chosen]


def finished_points(config_file: str) -> tuple[list[RunOutcome], SweepConfig, Plan]:
    """The sweep of ``config_file``: each (model, data size)'s best finished run, the config, the plan."""
    cfg = SweepConfig.load(config_file)
    plan = plan_sweep(cfg)
    return fitted_points(plan, load_outcomes(cfg, plan)), cfg, plan


def write_points_csv(plan: Plan, points: list[RunOutcome], path: Path) -> Path:
    """The fitted points at full precision (``repr`` floats read back bit for bit)."""
    planned = {run.name: run for run in plan.runs}
    rows = [(*_identity(o, planned[o.name]), repr(o.final_val_loss)) for o in points]
    return _write(path, POINT_COLUMNS, rows)


def write_runs_csv(plan: Plan, outcomes: list[RunOutcome], points: list[RunOutcome], path: Path) -> Path:
    """Every finished run: its size, data, compute, learning rate, final losses (overall and per source,
    from its MLflow run; train: the last logged, and on the seen windows if measured), the train/val gap
    and which train loss it used, epochs over its data, and whether it is its point's best."""
    planned = {run.name: run for run in plan.runs}
    per_source = {o.name: o.val_loss_by_source for o in outcomes}
    sources = sorted({source for losses in per_source.values() for source in losses})
    chosen = {o.name for o in points}
    header = (
        "name", "model", "N", "D", "C", "lr", "final_val_loss",
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
    """The first columns of both tables: name, model, N, D, C = 6ND and the run's learning rate."""
    return (outcome.name, planned.model, outcome.N, outcome.D, 6 * outcome.N * outcome.D, repr(planned.lr))


def _cell(value: Any) -> str:
    return "" if value is None else repr(value)


def _write(path: Path, header: tuple[str, ...], rows: list[tuple]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path
