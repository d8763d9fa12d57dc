"""The data axis of a sweep: which data points each model trains on (a token grid, multiples of N, or
IsoFLOP budgets within bounds), how a run of (model, data point, batch size, learning rate) is named,
and how many distinct tokens the shards give it (for its epochs).

Reads the sweep through ``DataGrid`` (the fields it needs of ``SweepConfig``), as plan.py imports this
module and not the reverse.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Protocol

from data_prep.tokenizer.manifest import MANIFEST_FILE, load_manifest
from pipeline.config.train import TrainJobConfig


class DataGrid(Protocol):
    """The data sizes of a ``SweepConfig`` (pipeline.scaling.plan documents each key)."""

    tokens: list[int]
    tokens_per_param: list[float]
    compute: list[float]
    min_tokens: int
    max_tokens: int


def si(value: float) -> str:
    """A count in SI units to three digits (``65.5k``): run names and tables stay short."""
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.3g}"


def data_points(grid: DataGrid, model: str, n_params: int, skipped: list[str]) -> list[tuple[float, float]]:
    """(the sweep's data point: C, tokens per param or tokens; the tokens it means for this model), without
    the IsoFLOP points whose D is outside the bounds; why each was left out goes to ``skipped``."""
    kept = []
    for point, tokens in _data_sizes(grid, n_params):
        if grid.compute and not _within(tokens, grid.min_tokens, grid.max_tokens):
            skipped.append(
                f"{model} at C={point:.3g}: D={tokens:.3g} is outside "
                f"[{grid.min_tokens:.3g}, {grid.max_tokens or math.inf:.3g}]"
            )
        else:
            kept.append((point, tokens))
    return kept


def _data_sizes(grid: DataGrid, n_params: int) -> list[tuple[float, float]]:
    if grid.compute:
        return [(budget, budget / (6 * n_params)) for budget in grid.compute]
    if grid.tokens_per_param:
        return [(ratio, ratio * n_params) for ratio in grid.tokens_per_param]
    return [(float(tokens), float(tokens)) for tokens in grid.tokens]


def _within(tokens: float, lower: int, upper: int) -> bool:
    return tokens >= lower and (not upper or tokens <= upper)


def point_label(grid: DataGrid, point: float) -> str:
    """The data point as the sweep gives it (not D after rounding to whole steps, which depends on the
    batch), so that every run at one point shares it: ``c1e+15``, ``d65.5k`` or ``x20`` (tokens per
    param)."""
    return f"c{point:.3g}" if grid.compute else f"x{point:g}" if grid.tokens_per_param else f"d{si(point)}"


def run_name(model: str, point: str, *, batch: Optional[int], multiplier: Optional[float]) -> str:
    """``<model>-<point>[-b<batch>][-lr<m>x]``: batch and multiplier are None where the sweep does not vary
    them, so a sweep without those axes keeps its run names (and its finished runs on disk)."""
    batch_part = f"-b{batch}" if batch is not None else ""
    lr_part = f"-lr{multiplier:g}x" if multiplier is not None else ""
    return f"{model}-{point}{batch_part}{lr_part}"


def shards_manifest(shards: str) -> dict | None:
    """The manifest of the runs' shards, checked (``load_manifest``); None while they are not made yet."""
    if not (shards and (Path(shards) / MANIFEST_FILE).is_file()):
        return None
    return load_manifest(shards)


def unique_train_tokens(base: TrainJobConfig, manifest: dict | None) -> int:
    """The distinct training tokens each run draws from: the split's, or fewer with ``data.unique_tokens``
    (a data-constrained sweep); 0 while the shards are not made yet."""
    if not manifest:
        return 0
    split = manifest["totals"]["by_split"]["train"]["tokens"]
    return min(split, base.data.unique_tokens) if base.data.unique_tokens else split
