"""``lmpipe launch torchrun|deepspeed|slurm|status``: run a verb under a launcher."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from launch.checks import RunNeeds, preflight
from launch.deepspeed import DeepSpeedLaunch, deepspeed_command, run_deepspeed
from launch.slurm.profile import SlurmProfile
from launch.slurm.sbatch import SlurmJob, render_sbatch, submit
from launch.slurm.state import format_states, job_states
from launch.torchrun import run_torchrun, torchrun_command
from pipeline.cli.plan import launch_fit_warning
from pipeline.config.finetune import FinetuneJobConfig
from pipeline.config.train import TrainJobConfig
from pipeline.core.config import Config
from pipeline.core.errors import ConfigError, InputError
from pipeline.core.files import atomic_write_text


def add_parsers(verbs: Any) -> None:
    launch = verbs.add_parser(
        "launch", help="run a verb under a launcher: torchrun, deepspeed or a Slurm job"
    )
    launchers = launch.add_subparsers(title="launchers", metavar="LAUNCHER")
    _add_torchrun(launchers)
    _add_deepspeed(launchers)
    _add_slurm(launchers)
    _add_status(launchers)


def _add_torchrun(launchers: Any) -> None:
    torchrun = _launcher(
        launchers,
        "torchrun",
        "torchrun on this node, or on each of N nodes: lmpipe launch "
        "torchrun --nproc-per-node 8 [--nnodes 2 --rdzv-endpoint node01:29500] -- train ...",
        _run_launch_torchrun,
    )
    torchrun.add_argument(
        "--nproc-per-node",
        "--gpus-per-node",
        type=int,
        default=1,
        help="processes (ranks) on this node, one per GPU",
    )
    torchrun.add_argument(
        "--nnodes", "--nodes", type=int, default=1, help="nodes taking part (run the same command on each)"
    )
    torchrun.add_argument(
        "--rdzv-endpoint",
        default="",
        help="HOST:PORT every node can reach (one of the nodes); needed for more than one node",
    )
    torchrun.add_argument("--rdzv-id", default="lmpipe", help="a job id shared by the nodes of one run")
    torchrun.add_argument(
        "--node-rank", type=int, help="this node's rank: static rendezvous at the endpoint instead of c10d"
    )


def _add_deepspeed(launchers: Any) -> None:
    deepspeed = _launcher(
        launchers,
        "deepspeed",
        "the DeepSpeed launcher, on this node or over a hostfile's hosts",
        _run_launch_deepspeed,
    )
    deepspeed.add_argument("--hostfile", default="", help="lines 'host slots=G'; none: this node only")
    deepspeed.add_argument(
        "--num-nodes", "--nodes", type=int, default=0, help="the first N hosts of the hostfile"
    )
    deepspeed.add_argument(
        "--num-gpus",
        "--gpus-per-node",
        type=int,
        default=0,
        help="ranks per node (on CPU: how many processes; the runner sees one device)",
    )
    deepspeed.add_argument("--include", default="", help="hosts/slots to use, e.g. node1@node2:0,2")
    deepspeed.add_argument("--exclude", default="", help="hosts/slots to leave out")
    deepspeed.add_argument(
        "--master-addr", default="", help="address of the first node (default: 127.0.0.1 on one node)"
    )
    deepspeed.add_argument("--master-port", type=int, default=29500, help="its port for the process group")


def _add_slurm(launchers: Any) -> None:
    slurm = _launcher(
        launchers,
        "slurm",
        "render an sbatch script from a cluster profile and submit it (--dry-run prints it)",
        _run_launch_slurm,
    )
    slurm.add_argument(
        "--profile", required=True, help="cluster profile YAML, e.g. configs/slurm/gpu-8x.yaml"
    )
    slurm.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a profile key, e.g. --set partition=gpu --set time=12:00:00 (repeatable)",
    )
    slurm.add_argument("--nodes", type=int, help="nodes (overrides the profile)")
    slurm.add_argument("--gpus-per-node", type=int, help="GPUs per node (overrides the profile)")
    slurm.add_argument("--job-name", help="Slurm job name (default: lmpipe-<verb>)")
    slurm.add_argument(
        "--launcher",
        choices=["torchrun", "deepspeed"],
        default="torchrun",
        help="what each node runs: torchrun (default) or DeepSpeed's launcher (hostfile from the allocation)",
    )
    slurm.add_argument(
        "--array-configs",
        nargs="+",
        default=[],
        metavar="CONFIG",
        help="a job array: element i runs the verb with --config CONFIG_i",
    )
    slurm.add_argument(
        "--max-parallel", type=int, default=0, help="array elements running at once (0: no cap)"
    )


def _add_status(launchers: Any) -> None:
    status = launchers.add_parser(
        "status",
        help="a submitted Slurm job's state, one line per array element",
        description="a submitted Slurm job's state, one line per array element "
        "(scontrol, then sacct for jobs that ended long ago, then squeue)",
    )
    status.add_argument("job_id", help="the id `lmpipe launch slurm` printed")
    status.set_defaults(run=_run_launch_status)


def _launcher(
    launchers: Any, name: str, help_text: str, run: Callable[[argparse.Namespace], int]
) -> argparse.ArgumentParser:
    launcher = launchers.add_parser(name, help=help_text, description=help_text)
    launcher.add_argument("--dry-run", action="store_true", help="print what would run, run nothing")
    launcher.add_argument("verb_args", nargs=argparse.REMAINDER, help="-- then the verb and its arguments")
    launcher.set_defaults(run=run)
    return launcher


def _verb_args(args: argparse.Namespace, launcher: str) -> list[str]:
    """The verb and its arguments, after ``--``."""
    verb_args = args.verb_args[1:] if args.verb_args[:1] == ["--"] else args.verb_args
    if not verb_args:
        raise InputError(
            f"give the verb to run after --, e.g. lmpipe launch {launcher} -- train --config FILE"
        )
    return verb_args


def _verb_config(parser: argparse.ArgumentParser, verb_args: Sequence[str]) -> Config | None:
    """The config the launched verb will load, loaded and validated here so that a typo fails in a
    second instead of on every rank, or in the queue (None for verbs without a config of their own:
    those that do set ``config_of`` on their parser)."""
    args = parser.parse_args(verb_args)
    config_of = getattr(args, "config_of", None)
    return config_of(args) if config_of else None


def _run_launch_torchrun(args: argparse.Namespace) -> int:
    verb_args = _verb_args(args, "torchrun")
    _verb_config(args.root_parser, verb_args)
    options = dict(
        nproc_per_node=args.nproc_per_node,
        nnodes=args.nnodes,
        node_rank=args.node_rank,
        rdzv_endpoint=args.rdzv_endpoint,
        rdzv_id=args.rdzv_id,
    )
    if args.dry_run:
        print(shlex.join(torchrun_command(verb_args, **options)))
        return 0
    return run_torchrun(verb_args, **options)


def _run_launch_deepspeed(args: argparse.Namespace) -> int:
    verb_args = _verb_args(args, "deepspeed")
    _verb_config(args.root_parser, verb_args)
    launch = DeepSpeedLaunch(
        hostfile=args.hostfile,
        num_nodes=args.num_nodes,
        num_gpus=args.num_gpus,
        include=args.include,
        exclude=args.exclude,
        master_addr=args.master_addr,
        master_port=args.master_port,
    )
    if args.dry_run:
        print(shlex.join(deepspeed_command(verb_args, launch)))
        return 0
    return run_deepspeed(verb_args, launch)


def _run_launch_slurm(args: argparse.Namespace) -> int:
    verb_args = _verb_args(args, "slurm")
    profile = SlurmProfile.load(
        args.profile, args.set, values={"nodes": args.nodes, "gpus_per_node": args.gpus_per_node}
    )
    configs = _slurm_configs(args, verb_args)
    for cfg in configs:  # a warning, not a refusal: the estimate is approximate and the GPUs assumed
        if warning := launch_fit_warning(cfg, nodes=profile.nodes, gpus_per_node=profile.gpus_per_node):
            print(f"lmpipe: warning: {warning}", file=sys.stderr)
    job_name = args.job_name or f"lmpipe-{verb_args[0]}"
    if args.dry_run:
        job = SlurmJob(
            tuple(verb_args),
            job_name,
            os.getcwd(),
            tuple(args.array_configs),
            args.max_parallel,
            args.launcher,
        )
        print(render_sbatch(profile, job), end="")
        return 0

    runs = [needs for cfg in configs if (needs := run_needs(cfg, profile.world_size)) is not None]
    checks = preflight(profile, runs)
    for check in checks:
        print(f"lmpipe: {'ok' if check.ok else 'FAILED'}: {check.line}", file=sys.stderr)
    if not all(check.ok for check in checks):
        return 2
    # The script is kept with the run it starts; an array's, and a config-less verb's, with the logs.
    output_dir = getattr(configs[0], "output_dir", "") if not args.array_configs else ""
    home = Path(output_dir) / "slurm" if output_dir else Path(profile.log_dir)
    # Each element reads a resolved copy: later edits of the user's files do not change queued jobs.
    resolved = (
        [
            str(cfg.save(home / f"{job_name}-configs" / f"{index}.yaml").resolve())
            for index, cfg in enumerate(configs)
            if cfg is not None  # always, in an array: _slurm_configs refuses verbs without a config
        ]
        if args.array_configs
        else []
    )
    job = SlurmJob(tuple(verb_args), job_name, os.getcwd(), tuple(resolved), args.max_parallel, args.launcher)
    script = home / f"{job_name}.sbatch"
    script.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(script, render_sbatch(profile, job))
    job_id = submit(script)
    log = f"{job_name}-{job_id}_<index>.out" if resolved else f"{job_name}-{job_id}.out"
    print(f"lmpipe: submitted {script} as job {job_id}; log {Path(profile.log_dir) / log}", file=sys.stderr)
    print(job_id)
    return 0


def _slurm_configs(args: argparse.Namespace, verb_args: list[str]) -> list[Config | None]:
    """The config of each array element, or the one of the job (None for a verb without one)."""
    if not args.array_configs:
        return [_verb_config(args.root_parser, verb_args)]
    if "--config" in verb_args:
        raise InputError(
            "--array-configs gives each element its --config; leave --config out of the verb's arguments"
        )
    configs = [
        _verb_config(args.root_parser, [verb_args[0], "--config", path, *verb_args[1:]])
        for path in args.array_configs
    ]
    if None in configs:
        raise InputError(
            f"--array-configs runs a verb that takes --config (train, finetune, eval), not {verb_args[0]}"
        )
    return configs


def run_needs(cfg: Config | None, world_size: int) -> RunNeeds | None:
    """What the preflight checks of a training or finetuning run; None for other verbs."""
    if isinstance(cfg, TrainJobConfig):
        shards = [cfg.data.shards, *(source.shards for source in cfg.data.sources.values())]
        resume = cfg.checkpoint.resume
    elif isinstance(cfg, FinetuneJobConfig):
        shards, resume = [], ""
    else:
        return None
    try:
        cfg.train.grad_accum_steps(cfg.parallel.dp_size(world_size))
        batch_error = ""
    except ConfigError as exc:
        batch_error = str(exc)
    return RunNeeds(
        output_dir=cfg.output_dir,
        global_batch_size=cfg.train.global_batch_size,
        batch_error=batch_error,
        precision=cfg.train.precision,
        backend=cfg.parallel.backend,
        shards=shards,
        resume=resume,
    )


def _run_launch_status(args: argparse.Namespace) -> int:
    states = job_states(args.job_id)
    if not states:
        print(
            f"lmpipe: job {args.job_id}: neither slurmctld (scontrol) nor accounting (sacct) knows it, "
            "nor the queue (squeue): a wrong id, or it ended more than MinJobAge ago on a cluster "
            "without accounting",
            file=sys.stderr,
        )
        return 1
    print(format_states(states))
    return 0
