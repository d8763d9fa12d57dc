"""The ``lmpipe sweep`` verbs that set runs against a fitted law: ``predict`` a run's loss before it is
trained, ``verify`` the trained run against that record (``pipeline.scaling.predict``), and
``repeats``: what a repeated token was worth in a data-constrained sweep (``pipeline.scaling.repeats``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.core.errors import ConfigError


def add_prediction_verbs(verbs: argparse._SubParsersAction) -> None:
    """Add ``predict``, ``verify`` and ``repeats`` to the ``sweep`` verbs."""
    about = (
        "predict a run's final loss from fit.json before training it: at --n N --d D, or at the "
        "compute-optimal N*, D* of --compute C; with --output, keep the prediction as a record"
    )
    predict = verbs.add_parser("predict", help=about, description=about)
    predict.add_argument("--fit", required=True, help="fit.json of lmpipe sweep fit / sweep run")
    predict.add_argument("--n", type=float, default=0.0, help="non-embedding parameters of the run")
    predict.add_argument("--d", type=float, default=0.0, help="training tokens of the run")
    predict.add_argument("--compute", type=float, default=0.0, help="instead: a budget C in FLOP")
    predict.add_argument("--output", help="write the prediction record here (never overwritten)")
    predict.set_defaults(run=_run_predict)
    about = (
        "set a trained run against a recorded prediction: relative error, inside the interval or not; "
        "adds the verdict to the record and, with --config, logs both on the sweep's MLflow parent run"
    )
    verify = verbs.add_parser("verify", help=about, description=about)
    verify.add_argument("--prediction", required=True, help="the record of lmpipe sweep predict --output")
    verify.add_argument(
        "--run",
        dest="run_dirs",
        action="append",
        required=True,
        help="the trained run's output_dir (its result.json); repeat it for the learning rates tried: "
        "their best is the observed loss, as for each point of the fit",
    )
    verify.add_argument("--config", help="the sweep config whose parent run gets the result")
    verify.set_defaults(run=_run_verify)
    about = (
        "a data-constrained sweep (data.unique_tokens) against fresh data: the fresh tokens the law says "
        "each repeated run was worth, and Muennighoff et al.'s R*; writes <root>/repeats.json and a plot"
    )
    repeats = verbs.add_parser("repeats", help=about, description=about)
    repeats.add_argument("--config", required=True, help="the data-constrained sweep (one model size)")
    repeats.add_argument("--fresh", required=True, help="the sweep of fresh-data runs it is set against")
    repeats.add_argument("--fit", required=True, help="fit.json of the fresh sweep")
    repeats.set_defaults(run=_run_repeats)


def _run_predict(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from pipeline.scaling.predict import describe, predict_run, record_prediction

    prediction = predict_run(args.fit, n=args.n, d=args.d, compute=args.compute)
    print(describe(asdict(prediction)))
    if args.output:
        print(f"wrote {record_prediction(prediction, args.output)}")
    return 0


def _run_verify(args: argparse.Namespace) -> int:
    from pipeline.scaling.predict import add_verification, describe, log_on_parent, read_record, verify_run

    record = read_record(args.prediction)
    verification = verify_run(record, [Path(run) / "result.json" for run in args.run_dirs])
    path = add_verification(args.prediction, record, verification)
    print(describe(record["prediction"], verification))
    print(f"wrote the verdict into {path}")
    if args.config:
        from mlflow.tracking import MlflowClient

        from pipeline.scaling.plan import SweepConfig, read_parent_run_id

        cfg = SweepConfig.load(args.config)
        parent = read_parent_run_id(cfg.root_dir)
        if not parent:
            raise ConfigError(f"sweep {cfg.name} has no parent run yet ({cfg.root_dir}/sweep.json)")
        log_on_parent(MlflowClient(tracking_uri=cfg.resolve_uri()), parent, path, verification)
        print(f"logged on the parent run {parent} of sweep {cfg.name}")
    return 0


def _run_repeats(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from pipeline.core.files import atomic_write_json
    from pipeline.scaling.plots import write_repeats_plot
    from pipeline.scaling.predict import load_fit
    from pipeline.scaling.repeats import analyse_repeats, describe_repeats
    from pipeline.scaling.results import finished_points

    repeated, repeated_cfg, plan = finished_points(args.config)
    fresh, _, _ = finished_points(args.fresh)
    sizes = {o.N for o in repeated}
    if len(sizes) != 1:
        raise ConfigError(
            f"{args.config}: a data-constrained sweep has one model size, its runs have {sorted(sizes)}"
        )
    n = sizes.pop()
    unique = {
        run.name: plan.configs[run.name].data.unique_tokens // run.seq_len * run.seq_len for run in plan.runs
    }
    fit = load_fit(args.fit)
    analysis = analyse_repeats(
        fit,
        n,
        [(o.name, o.D, unique[o.name] or o.D, o.final_val_loss) for o in repeated],
        {o.D: o.final_val_loss for o in fresh if o.N == n},
    )
    print(describe_repeats(analysis))
    root = repeated_cfg.root_dir
    path = atomic_write_json(root / "repeats.json", {**asdict(analysis), "fit_file": str(args.fit)})
    print(f"wrote {path} and {write_repeats_plot(analysis, fit, root / 'plots' / 'repeats.png')}")
    return 0
