"""A sweep's plots, as PNG files (matplotlib's Agg backend: no display needed).

- ``loss_vs_compute.png``: final val loss against C = 6ND per model, with the fitted frontier
  L(N*(C), D*(C)) when there is a fit;
- ``isoflop.png``: loss against N per compute budget (IsoFLOP sweeps);
- ``loss_vs_tokens.png``: loss against D, one line per model size;
- ``fit_vs_observed.png``: the fit's prediction against each run's loss (when there is a fit);
- ``train_val_gap.png``: final val minus train eval loss per run (hatched: a run without one, minus
  its last train loss), runs that repeated data in red.

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
from pipeline.scaling.io import Runs
from pipeline.scaling.outcome import RunOutcome
from pipeline.scaling.plan import Plan

Save = Callable[[Any, str], None]
"""Lays out a figure, writes it under its file name and closes it."""


def write_plots(
    plan: Plan, outcomes: list[RunOutcome], out_dir: Path, *, fit_file: Path | None = None
) -> list[Path]:
    """Every plot the finished runs allow; returns the files written."""
    plt, save, written = _pyplot_and_saver(out_dir)
    planned = {run.name: run for run in plan.runs}
    scored = [o for o in outcomes if o.final_val_loss is not None]
    fit = _load_fit(fit_file)
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
        observed = [float(o.final_val_loss) for o in scored if o.final_val_loss is not None]
        _fit_vs_observed(plt, save, observed, [float(fit.predict(o.N, o.D)) for o in scored])
    if scored:
        _train_val_gap(plt, save, scored)
    return written


def _pyplot_and_saver(out_dir: Path) -> tuple[Any, Save, list[Path]]:
    """pyplot on the Agg backend, and a ``save`` that writes a figure into ``out_dir`` and appends its path
    to the returned list."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        written.append(out_dir / name)

    return plt, save, written


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


def _fit_vs_observed(plt: Any, save: Save, observed: list[float], predicted: list[float]) -> None:
    fig, ax = plt.subplots(figsize=(5, 5))
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

    runs = [o for o in scored if o.train_val_gap is not None]
    fig, ax = plt.subplots(figsize=(max(6, 0.4 * len(runs)), 4))
    repeated = [bool(o.epochs and o.epochs > 1) for o in runs]
    fallback = [o.gap_from == "train" for o in runs]
    ax.bar(
        range(len(runs)),
        [o.train_val_gap for o in runs],
        color=["tab:red" if r else "tab:blue" for r in repeated],
        hatch=["//" if f else "" for f in fallback],
    )
    legend = []
    if any(repeated):
        legend += [
            Patch(color="tab:blue", label="one pass or less"),
            Patch(color="tab:red", label="repeated data (epochs > 1)"),
        ]
    if any(fallback):
        legend.append(
            Patch(facecolor="white", edgecolor="k", hatch="//", label="no train eval: val - last train loss")
        )
    if legend:
        ax.legend(handles=legend, fontsize=7)
    ax.set_xticks(range(len(runs)), [o.name for o in runs], rotation=60, ha="right", fontsize=7)
    ax.axhline(0, color="k", linewidth=0.5)
    ax.set_ylabel("final val - train eval loss" if not any(fallback) else "final val - train loss")
    ax.set_title("train/val gap per run")
    save(fig, "train_val_gap.png")


def _axes(ax: Any, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)


def write_fit_plots(runs: Runs, fit: ScalingFit, out_dir: Path) -> list[Path]:
    """The plots of a law against the points it was fitted to (``sweep fit --plots``, e.g. over several
    sweeps' tables): ``law_vs_tokens.png``, each model size's losses against D with the fitted L(N, D) at
    that N, which shows where the law misses the curvature; and ``fit_vs_observed.png``."""
    plt, save, written = _pyplot_and_saver(out_dir)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    grid = np.geomspace(runs.d.min() / 1.2, runs.d.max() * 1.2, 60)
    for index, n in enumerate(sorted(set(runs.n.tolist()))):
        color = f"C{index % 10}"
        at_n = runs.n == n
        ax.plot(runs.d[at_n], runs.loss[at_n], "o", color=color, label=f"N = {n:,.0f}")
        ax.plot(grid, fit.predict(n, grid), "--", color=color, linewidth=1)
    title = f"E={fit.E:.2f}  alpha={fit.alpha:.2f}  beta={fit.beta:.2f} (dashed: fitted law)"
    _axes(ax, "D (tokens)", "final val loss", title)
    save(fig, "law_vs_tokens.png")
    _fit_vs_observed(plt, save, runs.loss.tolist(), fit.predict(runs.n, runs.d).tolist())
    return written


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


def write_repeats_plot(analysis: Any, fit: ScalingFit, path: Path) -> Path:
    """``repeats.png``: final val loss against D for the data-constrained runs (U unique tokens, repeated)
    and the fresh-data runs of the same N, with the law's curve at that N (``repeats.RepeatAnalysis``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    runs = analysis.runs
    d = np.array([r.D for r in runs])
    ax.plot(d, [r.loss for r in runs], "o-", color="tab:red", label=f"U = {runs[0].U:,.0f} unique, repeated")
    fresh = [(r.D, r.fresh_loss) for r in runs if r.fresh_loss is not None]
    if fresh:
        ax.plot(*zip(*fresh), "s-", color="tab:blue", label="fresh data")
    grid = np.geomspace(d.min() / 1.5, d.max() * 1.5, 50)
    ax.plot(
        grid, fit.predict(analysis.n, grid), "--", color="gray", label=f"fitted law at N = {analysis.n:,.0f}"
    )
    ax.set_xscale("log")
    ax.set_xlabel("training tokens D")
    ax.set_ylabel("final val loss")
    title = (
        f"repeated vs fresh tokens (R* = {analysis.r_star:.3g})" if analysis.r_star else "repeated vs fresh"
    )
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
