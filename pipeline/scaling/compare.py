"""A sweep's runs side by side, read back from MLflow: the table ``lmpipe sweep compare`` prints and
the (N, D, loss) points ``lmpipe sweep fit --experiment`` fits.

Every training run tags N (non-embedding parameters), D (tokens seen) and C = 6ND when it ends
(``tracking.scaling_tags``), and logs ``val/loss`` (and ``train_eval/loss`` with
``data.train_eval_windows``); MLflow keeps each metric's latest value on the
run, which for a finished run is its final one. So the experiment itself is the sweep's record:
nothing is exported by hand, and a run added later shows up in the next comparison.
"""

from __future__ import annotations

import csv
import math
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from pipeline.core.errors import ConfigError
from pipeline.scaling.io import Runs
from pipeline.scaling.table import epochs_cell

SORT_KEYS = (
    "name",
    "model_size",
    "N",
    "D",
    "C",
    "epochs",
    "train_loss",
    "train_eval_loss",
    "val_loss",
    "gap",
    "val_ppl",
    "tokens_per_s",
    "wall_s",
)


@dataclass(frozen=True)
class RunSummary:
    """One run of the experiment, as the comparison shows it; None where the run did not log the value."""

    name: str
    run_id: str
    status: str
    model_size: str | None
    N: int | None
    D: int | None
    C: int | None
    epochs: float | None
    """Passes over the training data (a sweep tags its runs with it); above 1 the run repeated data."""
    train_loss: float | None
    """The last ``train/loss``: the mean over the final log window's batches, taken while weights moved."""
    train_eval_loss: float | None
    """``train_eval/loss``: the final weights on the first ``data.train_eval_windows`` training samples."""
    val_loss: float | None
    gap: float | None
    """val - train_eval loss: the final weights on unseen vs seen data. A run without train_eval/loss
    falls back to val - train loss (``gap_from``), which the weights' drift over the window blurs."""
    gap_from: str | None
    """Which loss ``gap`` subtracts: ``train_eval`` or (the fallback) ``train``; None without a gap."""
    val_ppl: float | None
    tokens_per_s: float | None
    wall_s: float | None


def experiment_runs(experiment: str, tracking_uri: str) -> list[RunSummary]:
    """Every training run of ``experiment`` (newest first): top-level runs and sweep children, not the
    sweeps' parent runs. An unknown experiment is an error that lists the ones the store has."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = sorted(e.name for e in client.search_experiments())
        raise ConfigError(
            f"no MLflow experiment named {experiment!r} at {tracking_uri}; it has: "
            f"{', '.join(map(repr, names)) or 'none'}"
        )
    runs = client.search_runs(
        [found.experiment_id], max_results=50_000, order_by=["attributes.start_time DESC"]
    )
    parents = {run.data.tags.get("mlflow.parentRunId") for run in runs}
    return [
        _summary(run) for run in runs if run.info.run_id not in parents
    ]  # a sweep's parent trains nothing


def _summary(run) -> RunSummary:  # an mlflow.entities.Run
    tags, metrics, info = run.data.tags, run.data.metrics, run.info
    wall = (info.end_time - info.start_time) / 1000 if info.end_time and info.start_time else None
    train, train_eval, val = (metrics.get(key) for key in ("train/loss", "train_eval/loss", "val/loss"))
    seen, gap_from = (train_eval, "train_eval") if train_eval is not None else (train, "train")
    gap = val - seen if val is not None and seen is not None else None
    return RunSummary(
        name=info.run_name or info.run_id[:8],
        run_id=info.run_id,
        status=info.status,
        model_size=tags.get("model_size"),
        N=_int(tags.get("N")),
        D=_int(tags.get("D")),
        C=_int(tags.get("C")),
        epochs=float(tags["epochs"]) if "epochs" in tags else None,
        train_loss=train,
        train_eval_loss=train_eval,
        val_loss=val,
        gap=gap,
        gap_from=gap_from if gap is not None else None,
        val_ppl=metrics.get("val/ppl"),
        tokens_per_s=metrics.get("tokens_per_s"),
        wall_s=wall,
    )


def _int(tag: str | None) -> int | None:
    return int(tag) if tag is not None else None


def fit_points(runs: list[RunSummary]) -> Runs:
    """(N, D, final val loss) of the finished runs; the others are named on stderr and left out
    (a run still going or killed has no final loss to fit)."""
    import numpy as np

    usable = [
        r for r in runs if r.status == "FINISHED" and r.N and r.D and r.val_loss and math.isfinite(r.val_loss)
    ]
    left_out = [r.name for r in runs if r not in usable]
    if left_out:
        shown = ", ".join(left_out[:5]) + (f" and {len(left_out) - 5} more" if len(left_out) > 5 else "")
        print(
            f"lmpipe: warning: {len(left_out)} run(s) without a finished N, D and val/loss left out: {shown}",
            file=sys.stderr,
        )
    return Runs(
        n=np.array([r.N for r in usable], dtype=float),
        d=np.array([r.D for r in usable], dtype=float),
        loss=np.array([r.val_loss for r in usable], dtype=float),
    )


def sort_runs(runs: list[RunSummary], key: str, *, descending: bool = False) -> list[RunSummary]:
    """Runs ordered by ``key`` (one of ``SORT_KEYS``); runs missing the value go last either way."""
    if key not in SORT_KEYS:
        raise ConfigError(f"cannot sort by {key!r}; choose one of {', '.join(SORT_KEYS)}")
    present = [r for r in runs if getattr(r, key) is not None]
    missing = [r for r in runs if getattr(r, key) is None]
    return sorted(present, key=lambda r: getattr(r, key), reverse=descending) + missing


def format_table(runs: list[RunSummary]) -> str:
    """Aligned columns for a terminal; ``-`` where a run has no value. A gap from the fallback (train loss,
    not train eval loss) is marked ``~`` and a last line says what that means."""
    header = (
        "run",
        "size",
        "N",
        "D",
        "C",
        "epochs",
        "train loss",
        "train eval",
        "val loss",
        "gap",
        "val ppl",
        "tokens/s",
        "wall",
        "status",
    )
    rows = [
        (
            r.name,
            r.model_size or "-",
            _si(r.N),
            _si(r.D),
            _si(r.C),
            epochs_cell(r.epochs),
            _float(r.train_loss),
            _float(r.train_eval_loss),
            _float(r.val_loss),
            _float(r.gap, "+.4f") + ("~" if r.gap_from == "train" else ""),
            _float(r.val_ppl, ".2f"),
            _si(r.tokens_per_s),
            _duration(r.wall_s),
            r.status,
        )
        for r in runs
    ]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            str(cell).rjust(width) if i else str(cell).ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths))
        )
        for row in [header, *rows]
    ]
    if any(r.gap_from == "train" for r in runs):
        lines.append(
            "~ gap = val - train loss (the last log window, under moving weights): the run has no "
            "train eval loss (data.train_eval_windows was 0)"
        )
    return "\n".join(lines)


def write_csv(runs: list[RunSummary], path: str | Path) -> Path:
    """Every field at full precision, one row per run: the input ``sweep fit --csv`` reads (``--d-col D
    --loss-col val_loss``) and what a spreadsheet wants."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[f.name for f in fields(RunSummary)])
        writer.writeheader()
        for run in runs:
            writer.writerow({key: "" if value is None else value for key, value in asdict(run).items()})
    return path


def _si(value: float | None) -> str:
    if value is None:
        return "-"
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{suffix}"
    return f"{value:.3g}"


def _float(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{secs:02d}s"
