"""``lmpipe train``, ``lmpipe finetune`` and ``lmpipe checkpoint consolidate``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pipeline.cli.common import load_config, verb
from pipeline.config.finetune import FinetuneJobConfig
from pipeline.config.train import TrainJobConfig


def add_parsers(verbs: Any) -> None:
    train = verb(
        verbs,
        "train",
        "pretrain a ladder model on token shards (under torchrun for several ranks)",
        _run_train,
    )
    train.add_argument(
        "--init-from",
        help="continued pretraining: start from this checkpoint's weights (step dir "
        "or training output dir) with a fresh optimizer, schedule and loader",
    )
    train.add_argument(
        "--resume",
        help="auto (default: the newest checkpoint in output_dir, if any), never, "
        "or a step_N directory; SIGTERM/SIGUSR2 checkpoint and exit 75 to requeue",
    )
    train.set_defaults(config_of=train_config)

    finetune = verb(verbs, "finetune", "supervised fine-tuning from a pretrained checkpoint", _run_finetune)
    finetune.add_argument("--init-from", help="pretrained checkpoint (step dir or training output dir)")
    finetune.set_defaults(config_of=finetune_config)

    checkpoint = verbs.add_parser("checkpoint", help="checkpoint tools: consolidate")
    checkpoint_verbs = checkpoint.add_subparsers(title="checkpoint verbs", metavar="VERB")
    consolidate = checkpoint_verbs.add_parser(
        "consolidate",
        help="any strategy's checkpoint -> one plain safetensors state dict (+ .json with the shape)",
    )
    consolidate.add_argument("checkpoint", help="checkpoint (step dir or training output dir)")
    consolidate.add_argument("--output", required=True, help="the .safetensors file to write")
    consolidate.set_defaults(run=_run_consolidate)


def train_config(args: argparse.Namespace) -> TrainJobConfig:
    return load_config(TrainJobConfig, args, init_from=args.init_from, **{"checkpoint.resume": args.resume})


def finetune_config(args: argparse.Namespace) -> FinetuneJobConfig:
    return load_config(FinetuneJobConfig, args, init_from=args.init_from)


def _run_train(args: argparse.Namespace) -> int:
    cfg = train_config(args)
    from pipeline.core.files import EXIT_PREEMPTED
    from pipeline.train.preemption import Preempted
    from pipeline.train.pretrain import train

    try:
        train(cfg)
    except Preempted as exc:
        print(f"lmpipe: {exc}", file=sys.stderr)
        return EXIT_PREEMPTED
    return 0


def _run_finetune(args: argparse.Namespace) -> int:
    cfg = finetune_config(args)
    from pipeline.finetune.run import finetune

    finetune(cfg)
    return 0


def _run_consolidate(args: argparse.Namespace) -> int:
    from pipeline.train.checkpoint import consolidate

    print(f"wrote {consolidate(args.checkpoint, args.output)}")
    return 0
