"""``lmpipe sweep``: the scaling-law verbs. Thin like the rest of the CLI: numpy and scipy are
imported by the handler, after the config is valid, so ``--help`` and user errors stay instant."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.cli.predict import add_prediction_verbs
from pipeline.cli.sweep_slurm import slurm_script, submit_sweep
from pipeline.core.config import Config, require, require_choice
from pipeline.core.errors import ConfigError
from pipeline.core.files import atomic_write_json

if TYPE_CHECKING:
    from pipeline.scaling.isoflop import IsoFlopFit

SHOWN_WARNINGS = 3
"""Skipped IsoFLOP budgets named on stderr; runs from ad-hoc grids can skip dozens."""


def tracking_uri(given: str) -> str:
    """The MLflow store a sweep's runs logged to: given, else ``$MLFLOW_TRACKING_URI``."""
    return given or os.environ.get("MLFLOW_TRACKING_URI", "")


@dataclass
class SweepFitConfig(Config):
    csv: list[str] = field(default_factory=list)
    """Runs tables, one run per row: model size, training compute or tokens, final loss; other columns
    are ignored. Several tables are read as one."""
    best_per_point: bool = False
    """Fit only the lowest loss of each (N, D) point over all rows, e.g. of two sweeps over one grid that
    differ in batch size (a sweep's own ``fit_points.csv`` already holds one row per point)."""
    average_seeds: bool = False
    """Rows of one (N, D, learning rate) are the same run with other seeds: fit their mean loss (before
    ``best_per_point`` picks a point's learning rate), so one seed's luck weighs less in the law."""
    lr_col: str = "lr"
    """Column of learning rates, read with ``average_seeds``."""
    experiment: str = ""
    """Instead of ``csv``: the finished runs of this MLflow experiment (tags N and D, final ``val/loss``)."""
    tracking_uri: str = ""
    """The store of ``experiment``; empty: $MLFLOW_TRACKING_URI."""
    n_col: str = "N"
    """Column of non-embedding parameters N."""
    c_col: str = ""
    """Column of training FLOP C (then D = C / 6N); give this or d_col."""
    d_col: str = ""
    """Column of training tokens D; give this or c_col."""
    loss_col: str = "loss"
    output: str = "fit.json"
    n_bootstrap: int = 200
    """Resampled refits behind the confidence intervals; 0 skips them."""
    ci_level: float = 0.95
    seed: int = 0
    """Seed of the bootstrap resampling: the same CSV and seed give the same fit.json."""
    min_d: float = 0.0
    """Leave out points trained on fewer tokens (runs too short to be in the law's regime); say why."""
    budget_rtol: float = 0.05
    """IsoFLOP: runs whose C = 6ND agree within this relative tolerance are one compute budget."""
    compute: list[float] = field(default_factory=list)
    """Budgets C (FLOP) to predict for: the compute-optimal N*, D* and loss of each, with CIs."""
    plots: str = ""
    """A folder for the law drawn against its points (law_vs_tokens.png, fit_vs_observed.png); empty: none."""

    def check(self, prefix: str) -> None:
        require(all(c > 0 for c in self.compute), f"{prefix}compute", "every budget must be > 0 FLOP")
        require(
            bool(self.csv) != bool(self.experiment),
            f"{prefix}csv",
            "give the runs CSVs (--csv FILE ...) or an MLflow experiment (--experiment NAME), one of the two",
        )
        require(
            not self.experiment or bool(tracking_uri(self.tracking_uri)),
            f"{prefix}tracking_uri",
            "give the MLflow store of the experiment (--tracking-uri, or $MLFLOW_TRACKING_URI)",
        )
        require(self.n_bootstrap >= 0, f"{prefix}n_bootstrap", "must be >= 0")
        require(0.0 < self.ci_level < 1.0, f"{prefix}ci_level", "must be between 0 and 1")
        require(self.budget_rtol >= 0.0 and self.min_d >= 0.0, f"{prefix}budget_rtol/min_d", "must be >= 0")


@dataclass
class SweepCompareConfig(Config):
    experiment: str = ""
    tracking_uri: str = ""
    """The store of ``experiment``; empty: $MLFLOW_TRACKING_URI."""
    sort: str = "C"
    """A column: name, model_size, N, D, C, train_loss, val_loss, val_ppl, tokens_per_s, wall_s."""
    descending: bool = False
    csv: str = ""
    """Also write every run at full precision to this CSV."""

    def check(self, prefix: str) -> None:
        from pipeline.scaling.compare import SORT_KEYS

        require(
            bool(self.experiment), f"{prefix}experiment", "give the MLflow experiment (--experiment NAME)"
        )
        require(
            bool(tracking_uri(self.tracking_uri)),
            f"{prefix}tracking_uri",
            "give the MLflow store (--tracking-uri, or $MLFLOW_TRACKING_URI)",
        )
        require_choice(self.sort, f"{prefix}sort", SORT_KEYS)


def add_parsers(verbs: argparse._SubParsersAction) -> None:
    """Add ``sweep`` and its sub-verbs to the top-level ``lmpipe`` parser."""
    sweep = verbs.add_parser(
        "sweep",
        help="scaling-law sweeps: plan, run, plot, fit, predict, verify, compare",
        description="scaling-law sweeps",
    )
    sweep_verbs = sweep.add_subparsers(title="sweep verbs", metavar="VERB")
    about = (
        "fit a runs CSV to L(N, D) = E + A/N^alpha + B/D^beta (Chinchilla approach 3, bootstrap CIs) and, "
        "where runs share compute budgets, find IsoFLOP optima (approach 2); writes fit.json"
    )
    fit = sweep_verbs.add_parser("fit", help=about, description=about)
    fit.add_argument("--config", help="YAML config file (defaults are built in)")
    fit.add_argument(
        "overrides",
        nargs="*",
        metavar="key.sub=value",
        help="dotted config overrides, e.g. ci_level=0.9 budget_rtol=0.1",
    )
    fit.add_argument("--csv", nargs="+", help="runs CSVs, one row per run; several are read as one")
    fit.add_argument(
        "--best-per-point",
        action="store_true",
        default=None,
        help="fit each (N, D) point's lowest loss only, over all rows (e.g. of two sweeps of one grid)",
    )
    fit.add_argument(
        "--average-seeds",
        action="store_true",
        default=None,
        help="average the rows of one (N, D, learning rate): the same run with other seeds",
    )
    fit.add_argument("--experiment", help="instead of --csv: the finished runs of this MLflow experiment")
    fit.add_argument("--tracking-uri", help="the experiment's MLflow store (default $MLFLOW_TRACKING_URI)")
    fit.add_argument("--n-col", help="column of model sizes N (default N)")
    fit.add_argument("--c-col", help="column of training FLOP C; D = C / 6N")
    fit.add_argument("--d-col", help="column of training tokens D (instead of --c-col)")
    fit.add_argument("--loss-col", help="column of final losses (default loss)")
    fit.add_argument("--output", help="where to write the fit (default fit.json)")
    fit.add_argument("--n-bootstrap", type=int, help="bootstrap refits for the CIs (default 200; 0: none)")
    fit.add_argument("--seed", type=int, help="bootstrap seed (default 0)")
    fit.add_argument(
        "--compute",
        type=float,
        nargs="+",
        metavar="C",
        help="also predict the compute-optimal N*, D* and loss (with CIs) at these budgets, FLOP",
    )
    fit.add_argument("--plots", help="also draw the law against its points into this folder")
    fit.set_defaults(run=_run_fit)

    add_prediction_verbs(sweep_verbs)

    about = (
        "resolve a sweep config (configs/sweep/*.yaml) into one train config per run under <root>/runs/, "
        "print the runs with an estimated time, write plan.json and plan.csv"
    )
    _sweep_verb(sweep_verbs, "plan", about, _run_plan)
    about = (
        "train the sweep's unfinished runs one after another (or as one Slurm job array with --slurm), "
        "children of one MLflow parent run; then log the losses, the fit and the plots on the parent"
    )
    run = _sweep_verb(sweep_verbs, "run", about, _run_sweep)
    run.add_argument(
        "--nproc-per-node",
        type=int,
        help="ranks per run, under torchrun (default: the config's nproc_per_node; 1 trains in this process)",
    )
    run.add_argument(
        "--max-runs", type=int, default=0, help="stop after this many runs (0: all); rerun to go on"
    )
    run.add_argument(
        "--slurm", metavar="PROFILE", help="submit one job array from this cluster profile instead"
    )
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a profile key")
    run.add_argument(
        "--max-parallel", type=int, default=0, help="--slurm: array elements at once (0: no cap)"
    )
    run.add_argument(
        "--dry-run", action="store_true", help="--slurm: print the sbatch script, submit nothing"
    )
    about = "the sweep's plots from its finished runs (and fit.json, if any) into <root>/plots"
    _sweep_verb(sweep_verbs, "plot", about, _run_plot)

    about = (
        "an MLflow experiment's runs side by side: N, D, C, final train/val loss, ppl, tokens/s, wall time"
    )
    compare = sweep_verbs.add_parser("compare", help=about, description=about)
    compare.add_argument("--config", help="YAML config file (defaults are built in)")
    compare.add_argument("overrides", nargs="*", metavar="key.sub=value", help="dotted config overrides")
    compare.add_argument("--experiment", help="the MLflow experiment")
    compare.add_argument("--tracking-uri", help="its MLflow store (default $MLFLOW_TRACKING_URI)")
    compare.add_argument("--sort", help="column to sort by (default C)")
    compare.add_argument("--descending", action="store_true", default=None, help="largest first")
    compare.add_argument("--csv", help="also write the runs to this CSV, full precision")
    compare.set_defaults(run=_run_compare)


def _sweep_verb(verbs: argparse._SubParsersAction, name: str, about: str, run) -> argparse.ArgumentParser:
    verb = verbs.add_parser(name, help=about, description=about)
    verb.add_argument("--config", required=True, help="sweep config, e.g. configs/sweep/cpu-small.yaml")
    verb.add_argument(
        "overrides", nargs="*", metavar="key.sub=value", help="dotted overrides, e.g. root=runs/s1"
    )
    verb.set_defaults(run=run)
    return verb


def _sweep_config(args: argparse.Namespace):
    from pipeline.scaling.plan import SweepConfig

    return SweepConfig.load(
        args.config, args.overrides, values={"nproc_per_node": getattr(args, "nproc_per_node", None)}
    )


def _write_plan(cfg, parent_run_id: str):
    """The plan, with each run's config.yaml, plan.json and plan.csv written under the sweep's root."""
    from pipeline.scaling.plan import plan_sweep, write_plan

    plan = plan_sweep(cfg, parent_run_id=parent_run_id)
    write_plan(plan, cfg.root_dir)
    return plan


def _run_plan(args: argparse.Namespace) -> int:
    from pipeline.scaling.plan import read_parent_run_id
    from pipeline.scaling.table import format_plan

    cfg = _sweep_config(args)
    plan = _write_plan(cfg, read_parent_run_id(cfg.root_dir))
    print(format_plan(plan))
    print(
        f"wrote {len(plan.runs)} run configs under {cfg.root_dir / 'runs'}, {cfg.root_dir / 'plan.json'} and "
        f"{cfg.root_dir / 'plan.csv'}"
    )
    return 0


def _run_sweep(args: argparse.Namespace) -> int:
    from pipeline.scaling.plan import plan_sweep, read_parent_run_id
    from pipeline.scaling.run import ensure_parent_run, run_local, summarize

    if args.max_runs < 0:
        raise ConfigError(f"--max-runs must be >= 0, got {args.max_runs}")
    if args.dry_run and not args.slurm:
        raise ConfigError(
            "--dry-run goes with --slurm PROFILE; `lmpipe sweep plan` shows a local sweep's runs"
        )
    cfg = _sweep_config(args)
    if args.dry_run:
        plan = _write_plan(cfg, read_parent_run_id(cfg.root_dir))
        print(slurm_script(args, cfg, plan)[0], end="")
        return 0
    plan_sweep(cfg)  # a config that cannot be planned fails before the parent run is made
    parent = ensure_parent_run(cfg)
    plan = _write_plan(cfg, parent)
    if args.slurm:
        submit_sweep(args, cfg, plan)
        return 0
    left = run_local(cfg, plan, max_runs=args.max_runs)
    if left:
        print(
            f"sweep {cfg.name}: stopped with {len(left)} run(s) left (--max-runs); "
            "run the same command to go on",
            file=sys.stderr,
        )
        return 0
    fit = summarize(cfg, plan, parent)
    print(
        f"sweep {cfg.name}: {len(plan.runs)} runs finished; parent MLflow run {parent}"
        + (f"; fit in {fit}" if fit else "")
        + f"; plots in {cfg.root_dir / 'plots'}"
    )
    return 0


def _run_plot(args: argparse.Namespace) -> int:
    from pipeline.scaling.outcome import load_outcomes
    from pipeline.scaling.plan import read_parent_run_id
    from pipeline.scaling.plots import write_plots

    cfg = _sweep_config(args)
    plan = _write_plan(cfg, read_parent_run_id(cfg.root_dir))
    fit = cfg.root_dir / "fit.json"
    written = write_plots(
        plan, load_outcomes(cfg, plan), cfg.root_dir / "plots", fit_file=fit if fit.is_file() else None
    )
    print("\n".join(f"wrote {path}" for path in written) or "no finished runs to plot yet")
    return 0


def _run_fit(args: argparse.Namespace) -> int:
    cfg = SweepFitConfig.load(
        args.config,
        args.overrides,
        values=dict(
            csv=args.csv,
            best_per_point=args.best_per_point,
            average_seeds=args.average_seeds,
            experiment=args.experiment,
            tracking_uri=args.tracking_uri,
            n_col=args.n_col,
            c_col=args.c_col,
            d_col=args.d_col,
            loss_col=args.loss_col,
            output=args.output,
            n_bootstrap=args.n_bootstrap,
            seed=args.seed,
            compute=args.compute,
            plots=args.plots,
        ),
    )
    from pipeline.scaling.compare import experiment_runs, fit_points
    from pipeline.scaling.fit import FitOptions, fit_scaling_law
    from pipeline.scaling.io import read_run_tables, with_min_tokens
    from pipeline.scaling.report import format_fit, format_optima

    if cfg.experiment:
        runs = fit_points(experiment_runs(cfg.experiment, tracking_uri(cfg.tracking_uri)))
    else:
        runs = read_run_tables(
            cfg.csv,
            n_col=cfg.n_col,
            loss_col=cfg.loss_col,
            c_col=cfg.c_col,
            d_col=cfg.d_col,
            best=cfg.best_per_point,
            lr_col=cfg.lr_col if cfg.average_seeds else "",
        )
    kept = with_min_tokens(runs, cfg.min_d)
    if len(kept) < len(runs):  # a fit never drops points silently
        print(
            f"lmpipe: note: {len(runs) - len(kept)} point(s) under min_d={cfg.min_d:g} tokens left out",
            file=sys.stderr,
        )
    runs = kept
    if runs.seeds is not None and (runs.seeds > 1).any():  # say what the points are
        averaged = runs.seeds[runs.seeds > 1]
        print(
            f"lmpipe: note: {len(averaged)} of {len(runs)} points are means over {averaged.min()}"
            f"{'' if averaged.min() == averaged.max() else f'-{averaged.max()}'} seeds",
            file=sys.stderr,
        )
    fit = fit_scaling_law(
        runs.n,
        runs.d,
        runs.loss,
        FitOptions(n_bootstrap=cfg.n_bootstrap, ci_level=cfg.ci_level, seed=cfg.seed),
    )
    result = fit.to_json()
    optima = [fit.compute_optimal(budget) for budget in cfg.compute]
    if optima:
        result["compute_optimal"] = [
            {
                "C": o.compute,
                "N": o.n,
                "D": o.d,
                "loss": o.loss,
                "ci": {key: list(bounds) for key, bounds in o.ci.items()},
            }
            for o in optima
        ]
    isoflop = _isoflop_fit(runs, cfg, result)
    output = Path(cfg.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(output, result)
    print(format_fit(fit, isoflop))
    if optima:
        print(format_optima(optima, fit.ci_level))
    print(f"wrote {output}")
    if cfg.plots:
        from pipeline.scaling.plots import write_fit_plots

        print("\n".join(f"wrote {path}" for path in write_fit_plots(runs, fit, Path(cfg.plots))))
    return 0


def _isoflop_fit(runs, cfg: SweepFitConfig, result: dict) -> IsoFlopFit | None:
    """The IsoFLOP fit into ``result["isoflop"]``, if the runs lie on budgets; its skipped budgets as a
    few warnings (every one is in the output file), not one per run."""
    from pipeline.scaling.isoflop import IsoFlopUnavailable, fit_isoflop

    isoflop: IsoFlopFit | None = None
    with warnings.catch_warnings(record=True) as skipped_budgets:
        warnings.simplefilter("always")
        try:
            isoflop = fit_isoflop(runs.n, runs.d, runs.loss, rtol=cfg.budget_rtol)
            result["isoflop"] = isoflop.to_json()
        except IsoFlopUnavailable as exc:
            # Runs not laid out on budgets (e.g. an N x D grid) are normal input, not an error: one line
            # instead of a warning per run.
            print(f"lmpipe: note: no IsoFLOP fit: {exc}", file=sys.stderr)
    if isoflop is not None:
        for warning in skipped_budgets[:SHOWN_WARNINGS]:
            print(f"lmpipe: warning: {warning.message}", file=sys.stderr)
        if len(skipped_budgets) > SHOWN_WARNINGS:
            print(
                f"lmpipe: warning: isoflop: {len(skipped_budgets) - SHOWN_WARNINGS} more budget(s) skipped; "
                f"all are listed under isoflop.skipped in {cfg.output}",
                file=sys.stderr,
            )
    return isoflop


def _run_compare(args: argparse.Namespace) -> int:
    cfg = SweepCompareConfig.load(
        args.config,
        args.overrides,
        values=dict(
            experiment=args.experiment,
            tracking_uri=args.tracking_uri,
            sort=args.sort,
            descending=args.descending,
            csv=args.csv,
        ),
    )
    from pipeline.scaling.compare import experiment_runs, format_table, sort_runs, write_csv

    runs = sort_runs(
        experiment_runs(cfg.experiment, tracking_uri(cfg.tracking_uri)), cfg.sort, descending=cfg.descending
    )
    print(format_table(runs))
    if cfg.csv:
        print(f"wrote {write_csv(runs, cfg.csv)}")
    return 0
