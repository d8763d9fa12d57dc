"""``lmpipe bench node``: all-reduce bandwidth, matmul TFLOP/s and a timed training run on this node, or on
every node of a torchrun / ``lmpipe launch slurm`` job; ``lmpipe bench table``: its reports as rows for
``bench/RESULTS.md``."""

from __future__ import annotations

import argparse
from typing import Any

from pipeline.config.parallel import STRATEGIES
from pipeline.core.errors import InputError
from pipeline.model.ladder import SIZES


def add_parsers(verbs: Any) -> None:
    bench = verbs.add_parser("bench", help="measure the hardware lmpipe runs on: node, table")
    bench_verbs = bench.add_subparsers(title="bench verbs", metavar="VERB")
    node = bench_verbs.add_parser(
        "node",
        help="all-reduce bus bandwidth, bf16 matmul TFLOP/s against peak, and a timed training run "
        "(tokens/s per GPU, MFU, peak memory); on CPU a few seconds of the tiny model over gloo",
        description="Every rank measures: all-reduce bus bandwidth (nccl-tests' convention), a square "
        "matmul's TFLOP/s against the device's peak, and --seconds of the training step lmpipe train "
        "takes on random tokens. Rank 0 prints one table and writes --json. Defaults on a GPU: 1.3b, "
        "seq 2048, micro-batch 8, bf16, 60 s; without CUDA: tiny, seq 128, micro-batch 4, fp32, 3 s.",
    )
    node.add_argument("--size", choices=list(SIZES), help="ladder rung (default 1.3b; tiny without CUDA)")
    node.add_argument("--strategy", choices=list(STRATEGIES), help="parallel strategy (default fsdp)")
    node.add_argument("--compile", action="store_true", default=None, help="torch.compile each block")
    node.add_argument("--seconds", type=float, help="timed training run (default 60; 3 without CUDA)")
    node.add_argument(
        "--micro-batch", type=int, help="sequences per rank per step (default 8; 4 without CUDA)"
    )
    node.add_argument("--seq-len", type=int, help="tokens per sequence (default 2048; 128 without CUDA)")
    node.add_argument("--json", metavar="FILE", help="write the report (every rank's figures) here")
    node.set_defaults(run=_run_node)
    table = bench_verbs.add_parser(
        "table",
        help="bench node --json reports as rows for bench/RESULTS.md (device, date, commit, command)",
    )
    table.add_argument("reports", nargs="+", metavar="JSON", help="reports written by bench node --json")
    table.set_defaults(run=_run_table)


def _run_node(args: argparse.Namespace) -> int:
    import torch

    from pipeline.benchmark.config import resolve
    from pipeline.benchmark.node import bench_node

    cfg = resolve(
        torch.cuda.is_available(),
        size=args.size,
        strategy=args.strategy,
        compile=args.compile,
        seconds=args.seconds,
        micro_batch=args.micro_batch,
        seq_len=args.seq_len,
    )
    bench_node(cfg, json_path=args.json)
    return 0


def _run_table(args: argparse.Namespace) -> int:
    from pipeline.benchmark.results import load_reports, results_table

    try:
        reports = load_reports(args.reports)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read a bench node report: {exc}") from None
    print(results_table(reports))
    return 0
