"""Runs for a scaling-law fit, read from CSVs: one row per run, model size N, then either its
training compute C (D = C / 6N) or its tokens D, and its final loss. Several tables (e.g. two sweeps
over the same grid, one per batch size) can be read as one, each (N, D) point keeping its best run; runs
repeated with another seed (same N, D and learning rate) can be averaged first, so that a point's loss
carries less of one seed's luck."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.errors import ConfigError, InputError, MissingInputError


@dataclass(frozen=True)
class Runs:
    n: np.ndarray
    d: np.ndarray
    loss: np.ndarray
    lr: np.ndarray | None = None
    """Each run's learning rate, when read (``lr_col``): what tells a seed's replicate from another run."""
    seeds: np.ndarray | None = None
    """How many replicate rows each run's loss is the mean of, once averaged (``mean_of_replicates``)."""

    def __len__(self) -> int:
        return len(self.n)

    def subset(self, index: np.ndarray) -> Runs:
        """The runs at ``index`` (a mask or positions), in that order."""
        lr = None if self.lr is None else self.lr[index]
        seeds = None if self.seeds is None else self.seeds[index]
        return Runs(n=self.n[index], d=self.d[index], loss=self.loss[index], lr=lr, seeds=seeds)


def read_run_tables(
    paths: Sequence[str | Path],
    *,
    n_col: str,
    loss_col: str,
    c_col: str = "",
    d_col: str = "",
    best: bool = False,
    lr_col: str = "",
) -> Runs:
    """The rows of every table in ``paths``, concatenated; ``best``: only the lowest loss of each (N, D)
    point, as when the tables are sweeps over the same grid with another hyperparameter. ``lr_col``: rows
    of one (N, D, learning rate) are replicates (other seeds) and become one run of their mean loss."""
    tables = [
        read_runs(path, n_col=n_col, loss_col=loss_col, c_col=c_col, d_col=d_col, lr_col=lr_col)
        for path in paths
    ]
    keys = ("n", "d", "loss", "lr") if lr_col else ("n", "d", "loss")
    runs = Runs(*(np.concatenate([getattr(t, key) for t in tables]) for key in keys))
    if lr_col:
        runs = mean_of_replicates(runs)
    return best_per_point(runs) if best else runs


def _point_keys(runs: Runs) -> list[tuple[float, ...]]:
    """(N, D) of each run, D at 9 significant digits, so tokens derived from C = 6ND in two tables still
    meet; with the learning rate (9 digits too) when read."""
    d = (float(f"{value:.9g}") for value in runs.d.tolist())
    if runs.lr is None:
        return list(zip(runs.n.tolist(), d))
    return list(zip(runs.n.tolist(), d, (float(f"{value:.9g}") for value in runs.lr.tolist())))


def mean_of_replicates(runs: Runs) -> Runs:
    """One run per (N, D, learning rate), its loss the mean over the rows that repeat it with other seeds;
    runs in order of first appearance."""
    groups: dict[tuple[float, ...], list[int]] = {}
    for index, key in enumerate(_point_keys(runs)):
        groups.setdefault(key, []).append(index)
    first = np.array([rows[0] for rows in groups.values()], dtype=np.int64)
    merged = runs.subset(first)
    loss = np.array([runs.loss[rows].mean() for rows in groups.values()])
    seeds = np.array([len(rows) for rows in groups.values()], dtype=np.int64)
    return Runs(n=merged.n, d=merged.d, loss=loss, lr=merged.lr, seeds=seeds)


def best_per_point(runs: Runs) -> Runs:
    """The lowest-loss run of each (N, D) point, points in order of first appearance. Once replicates are
    averaged, only a point's runs of the most seeds compete: a mean over two seeds is not beaten by another
    learning rate's single lucky seed (seed noise moved single books runs by up to 0.07 nats)."""
    keys = [key[:2] for key in _point_keys(runs)]
    seeds = runs.seeds if runs.seeds is not None else np.ones(len(runs), dtype=np.int64)
    rank = list(zip((-seeds).tolist(), runs.loss.tolist()))  # more seeds first, then lower loss
    best: dict[tuple[float, ...], int] = {}
    for index, key in enumerate(keys):
        if key not in best or rank[index] < rank[best[key]]:
            best[key] = index
    kept = np.array(list(best.values()), dtype=np.int64)  # points in order of first appearance
    return runs.subset(kept)


def with_min_tokens(runs: Runs, min_d: float) -> Runs:
    """The runs trained on at least ``min_d`` tokens (shorter ones are not in the law's regime)."""
    return runs.subset(runs.d >= min_d)


def read_runs(
    path: str | Path, *, n_col: str, loss_col: str, c_col: str = "", d_col: str = "", lr_col: str = ""
) -> Runs:
    """Read the named columns (other columns are ignored). Every error is one line that names the file
    and, for a bad cell, its line and column, so a run exported by hand can be found and fixed."""
    if bool(c_col) == bool(d_col):
        raise ConfigError("give the compute column (--c-col) or the tokens column (--d-col), one of the two")
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"runs CSV not found: {path}")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        wanted = [n_col, c_col or d_col, loss_col, *([lr_col] if lr_col else [])]
        missing = [column for column in wanted if column not in header]
        if missing:
            raise InputError(
                f"{path}: no column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}; "
                f"its columns are {', '.join(map(repr, header)) or 'none (empty file)'}"
            )
        rows = [
            [_positive(row.get(column), path, reader.line_num, column) for column in wanted] for row in reader
        ]
    values = np.array(rows, dtype=float).reshape(-1, len(wanted))
    n, second, loss = values.T[:3]
    d = second / (6.0 * n) if c_col else second
    return Runs(n=n, d=d, loss=loss, lr=values.T[3] if lr_col else None)


def _positive(cell: str | None, path: Path, line: int, column: str) -> float:
    """A cell as a positive finite float; ``cell`` is None when the row is shorter than the header."""
    if cell is None or not cell.strip():
        raise InputError(f"{path} line {line}, column {column!r}: empty cell")
    try:
        value = float(cell)
    except ValueError:
        raise InputError(f"{path} line {line}, column {column!r}: {cell!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise InputError(f"{path} line {line}, column {column!r}: {cell!r} must be a positive number")
    return value
