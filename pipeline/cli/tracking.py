"""``lmpipe tracking replay FILE``: send what a job could not log to MLflow while its store was down."""

from __future__ import annotations

import argparse
from typing import Any


def add_parsers(verbs: Any) -> None:
    tracking = verbs.add_parser("tracking", help="MLflow tracking: replay what a job could not send")
    commands = tracking.add_subparsers(title="commands", metavar="COMMAND")
    replay = commands.add_parser(
        "replay",
        help="send a job's <output_dir>/mlflow_unsent.jsonl to the MLflow runs it names (safe to repeat)",
    )
    replay.add_argument("file", help="the unsent file a job named in its warning")
    replay.set_defaults(run=_run_replay)


def _run_replay(args: argparse.Namespace) -> int:
    from pipeline.train.tracking import replay_unsent

    count = replay_unsent(args.file)
    print(f"replayed {count} operation(s) from {args.file}")
    return 0
