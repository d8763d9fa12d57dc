"""``lmpipe demo``: the whole loop on a corpus it generates."""

from __future__ import annotations

import argparse
from typing import Any

from pipeline.cli.common import load_config, verb


def add_parsers(verbs: Any) -> None:
    demo = verb(verbs, "demo", "run the whole loop on a corpus it generates", _run_demo)
    demo.add_argument("--workdir", help="where every output of the demo lands (default: demo_out)")


def _run_demo(args: argparse.Namespace) -> int:
    from pipeline.demo.run import DemoConfig, run_demo

    return run_demo(load_config(DemoConfig, args, workdir=args.workdir))
