"""A sweep's plots, as PNG files (matplotlib's Agg backend: no display needed).

- ``loss_vs_compute.png``: final val loss against C = 6ND per model, with the fitted frontier
  L(N*(C), D*(C)) when there is a fit;
- ``isoflop.png``: loss against N per compute budget (IsoFLOP sweeps);
- ``loss_vs_tokens.png``: loss against D, one line per model size;
- ``fit_vs_observed.png``: the fit's prediction against each run's loss (when there is a fit);
- ``train_val_gap.png``: final val minus train loss per run, runs that repeated data in red.

matplotlib is imported when plots are drawn, not with this module: it costs more than a second.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.scaling.fit import ScalingFit
from pipeline.scaling.outcome import RunOutcome
from pipeline.scaling.plan import Plan

Save = Callable[[Any, str], None]
"""Lays out a figure, writes it under its file name and closes it."""


def write_plots(
    plan: Plan, outcomes: list[RunOutcome], out_dir: Path, *, fit_file: Path | None = None
) -> list[Path]:
    """Every plot the finished runs allow; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    planned = {run.name: run for run in plan.runs}
    scored = [o for o in outcomes if o.final_val_loss is not None]
    fit = _load_fit(fit_file)
    written: list[Path] = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        written.append(out_dir / name)

    by_model: dict[str, list[RunOutcome]] = defaultdict(list)
    budgets: dict[float, list[RunOutcome]] = defaultdict(list)
    for outcome in scored:
        by_model[planned[outcome.name].model].append(outcome)
        if planned[outcome.name].budget:
            budgets[planned[outcome.name].budget].append(outcome)
    if scored:
        _loss_vs_compute(plt, save, by_model, scored, fit)
        _loss_vs_tokens(plt, save, by_model)
    if budgets:
        _isoflop(plt, save, budgets)
    if fit is not None and scored:
        _fit_vs_observed(plt, save, scored, fit)
    if scored:
        _train_val_gap(plt, save, scored)
    return written


def _loss_vs_compute(
    plt: Any,
    save: Save,
    by_model: dict[str, list[RunOutcome]],
    scored: list[RunOutcome],
    fit: ScalingFit | None,
) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for model, runs in by_model.items():
        ax.scatter([6 * o.N * o.D for o in runs], [o.final_val_loss for o in runs], label=model)
    if fit is not None:
        compute = np.geomspace(min(6 * o.N * o.D for o in scored), max(6 * o.N * o.D for o in scored), 50)
        ax.plot(compute, [fit.compute_optimal(c).loss for c in compute], "k--", label="fitted frontier")
    _axes(ax, "C = 6ND (FLOP)", "final val loss", "loss vs compute")
    save(fig, "loss_vs_compute.png")


def _loss_vs_tokens(plt: Any, save: Save, by_model: dict[str, list[RunOutcome]]) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for model, runs in by_model.items():
        runs = sorted(runs, key=lambda o: o.D)
        ax.plot(
            [o.D for o in runs],
            [o.final_val_loss for o in runs],
            "o-",
            label=f"{model} (N={runs[0].N:,})",
        )
    _axes(ax, "D (tokens)", "final val loss", "loss vs data, per model size")
    save(fig, "loss_vs_tokens.png")


def _isoflop(plt: Any, save: Save, budgets: dict[float, list[RunOutcome]]) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for budget, runs in sorted(budgets.items()):
        runs = sorted(runs, key=lambda o: o.N)
        ax.plot([o.N for o in runs], [o.final_val_loss for o in runs], "o-", label=f"C={budget:.2g}")
    _axes(ax, "N (non-embedding parameters)", "final val loss", "IsoFLOP curves")
    save(fig, "isoflop.png")


def _fit_vs_observed(plt: Any, save: Save, scored: list[RunOutcome], fit: ScalingFit) -> None:
    fig, ax = plt.subplots(figsize=(5, 5))
    observed = [o.final_val_loss for o in scored]
    predicted = [float(fit.predict(o.N, o.D)) for o in scored]
    ax.scatter(observed, predicted)
    low, high = min(observed + predicted), max(observed + predicted)
    ax.plot([low, high], [low, high], "k:", label="y = x")
    ax.set_xlabel("observed final val loss")
    ax.set_ylabel("fitted L(N, D)")
    ax.set_title("fit vs observed")
    ax.legend(fontsize=7)
    save(fig, "fit_vs_observed.png")


def _train_val_gap(plt: Any, save: Save, scored: list[RunOutcome]) -> None:
    from matplotlib.patches import Patch

    fig, ax = plt.subplots(figsize=(max(6, 0.4 * len(scored)), 4))
    repeated = [bool(o.epochs and o.epochs > 1) for o in scored]
    ax.bar(
        range(len(scored)),
        [o.final_val_loss - o.last_train_loss for o in scored],
        color=["tab:red" if r else "tab:blue" for r in repeated],
    )
    if any(repeated):
        ax.legend(
            handles=[
                Patch(color="tab:blue", label="one pass or less"),
                Patch(color="tab:red", label="repeated data (epochs > 1)"),
            ],
            fontsize=7,
        )
    ax.set_xticks(range(len(scored)), [o.name for o in scored], rotation=60, ha="right", fontsize=7)
    ax.axhline(0, color="k", linewidth=0.5)
    ax.set_ylabel("val - train loss (final)")
    ax.set_title("train/val gap per run")
    save(fig, "train_val_gap.png")


def _axes(ax: Any, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)


def _load_fit(path: Path | None) -> ScalingFit | None:
    """The ScalingFit of a fit.json (without its bootstrap draws: the plots show the point estimate)."""
    if path is None or not path.is_file():
        return None
    data = json.loads(path.read_text())
    return ScalingFit(
        E=data["E"],
        A=data["A"],
        B=data["B"],
        alpha=data["alpha"],
        beta=data["beta"],
        ci={},
        objective=data["objective"],
        n_points=data["n_points"],
    )
