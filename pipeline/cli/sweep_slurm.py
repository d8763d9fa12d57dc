"""``lmpipe sweep run --slurm``: the sweep's unfinished runs as one Slurm job array, checked first as
``lmpipe launch slurm`` checks a job (a log directory Slurm cannot create fails every element at once,
with no log to say why)."""

from __future__ import annotations

import argparse
import os
import sys

from pipeline.core.errors import ConfigError
from pipeline.core.files import atomic_write_text


def slurm_script(args: argparse.Namespace, cfg, plan):
    """The sweep's sbatch script for the ``--slurm`` profile, and the runs it trains."""
    from pipeline.scaling.run import slurm_script as render

    return render(
        cfg,
        plan,
        profile_path=args.slurm,
        profile_overrides=args.set,
        max_parallel=args.max_parallel,
        workdir=os.getcwd(),
    )


def submit_sweep(args: argparse.Namespace, cfg, plan) -> None:
    """Write the sweep's sbatch script beside its runs and submit it."""
    from launch.checks import preflight
    from launch.slurm.profile import SlurmProfile
    from launch.slurm.sbatch import submit
    from pipeline.cli.launch import run_needs

    script, pending = slurm_script(args, cfg, plan)
    profile = SlurmProfile.load(args.slurm, args.set)
    runs = [run_needs(plan.configs[run.name], profile.world_size) for run in pending]
    checks = preflight(profile, [needs for needs in runs if needs is not None])
    failed = [check.line for check in checks if not check.ok]
    if failed:  # e.g. a log directory Slurm cannot write: every element would fail at once, silently
        raise ConfigError("cannot submit the sweep: " + "; ".join(failed))
    path = atomic_write_text(cfg.root_dir / f"sweep-{cfg.name}.sbatch", script)
    print(
        f"lmpipe: submitted {path} ({len(pending)} runs) as job {submit(path)}; when it has finished, "
        f"`lmpipe sweep run --config {args.config}` again logs the results on the parent run",
        file=sys.stderr,
    )
