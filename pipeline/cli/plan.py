"""``lmpipe plan memory``: will a training config fit its GPUs, under each strategy, before it is launched."""

from __future__ import annotations

import argparse
from typing import Any

from pipeline.cli.common import load_config
from pipeline.config.train import TrainJobConfig
from pipeline.core.errors import ConfigError, InputError
from pipeline.plan.device import ASSUMED_GPU_GIB, detected_memory
from pipeline.plan.fit import fit_warning, plan_of, report, vocab_size
from pipeline.plan.memory import GiB

NO_SHARDS = "data.shards=unused"
"""What a config without shards is planned with: memory does not depend on the data, only on its
vocabulary (``fit.vocab_size``)."""


def add_parsers(verbs: Any) -> None:
    plan = verbs.add_parser("plan", help="plan a run before launching it: memory")
    plan_verbs = plan.add_subparsers(title="plan verbs", metavar="VERB")
    memory = plan_verbs.add_parser(
        "memory",
        help="GiB per GPU of a training config under each strategy, and whether it fits",
        description="GiB per GPU of a training config (weights, gradients, AdamW state, activations) "
        "under ddp, fsdp/hsdp and zero1-3 on a layout, against the device memory, and what to change "
        "when it does not fit",
    )
    memory.add_argument("--config", required=True, help="training config YAML, e.g. configs/train/70b.yaml")
    memory.add_argument("--nodes", type=int, default=1, help="nodes (default 1)")
    memory.add_argument("--gpus-per-node", type=int, default=8, help="GPUs per node (default 8)")
    memory.add_argument(
        "--device-memory",
        type=float,
        metavar="GiB",
        help="one GPU's memory; default: detected via torch.cuda, else unknown",
    )
    memory.add_argument("overrides", nargs="*", metavar="key.sub=value", help="dotted config overrides")
    memory.set_defaults(run=_run_memory)


def plan_config(args: argparse.Namespace) -> TrainJobConfig:
    """The training config; one without token shards is planned all the same (``NO_SHARDS``)."""
    try:
        return load_config(TrainJobConfig, args)
    except ConfigError as exc:
        if "data.shards" not in str(exc):
            raise
    return TrainJobConfig.load(args.config, [*args.overrides, NO_SHARDS])


def _run_memory(args: argparse.Namespace) -> int:
    if args.nodes < 1 or args.gpus_per_node < 1:
        raise InputError("--nodes and --gpus-per-node must be >= 1")
    cfg = plan_config(args)
    if args.device_memory is not None:
        device_bytes: float | None = args.device_memory * GiB
        device_line = f"{args.device_memory:g} GiB (given)"
    elif (detected := detected_memory()) is not None:
        device_bytes, name = detected
        device_line = f"{device_bytes / GiB:.1f} GiB ({name}, detected via torch.cuda)"
    else:
        device_bytes, device_line = None, "unknown (no CUDA device here; give --device-memory GiB)"
    plan = plan_of(cfg, nodes=args.nodes, gpus_per_node=args.gpus_per_node, device_bytes=device_bytes)
    problems = plan.layout.problems()
    if problems:
        raise InputError("; ".join(problems))
    vocab, source = vocab_size(cfg)
    print(f"{args.config}: vocabulary {vocab} ({source})")
    print(report(plan, device_line=device_line))
    return 0


def launch_fit_warning(cfg: object, *, nodes: int, gpus_per_node: int) -> str:
    """For ``lmpipe launch slurm``: one line when a training config's strategy will not fit the job's
    GPUs, taken to be of ``ASSUMED_GPU_GIB`` (they are on other machines); empty when it fits, for a
    CPU-only job, and for other verbs."""
    if not isinstance(cfg, TrainJobConfig) or gpus_per_node < 1:
        return ""
    plan = plan_of(cfg, nodes=nodes, gpus_per_node=gpus_per_node, device_bytes=ASSUMED_GPU_GIB * GiB)
    if plan.layout.problems():
        return ""  # the run's own checks say why the layout is wrong
    return fit_warning(plan)
