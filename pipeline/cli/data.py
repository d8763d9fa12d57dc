"""``lmpipe data prep|train-tokenizer|tokenize|stats``: flags and handlers; the work is data_prep's."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pipeline.cli.common import load_config, verb


def add_parsers(verbs: Any) -> None:
    data = verbs.add_parser("data", help="data preparation: prep, train-tokenizer, tokenize, stats")
    data_verbs = data.add_subparsers(title="data verbs", metavar="VERB")
    prep = verb(
        data_verbs,
        "prep",
        "WARC / Wikipedia dumps -> cleaned, filtered, deduplicated docs/*.parquet",
        _run_prep,
    )
    prep.add_argument(
        "--input",
        nargs="+",
        help="files, globs, directories, http(s)/s3 URLs or *.paths[.gz] listings "
        "(.warc[.gz], .warc.wet.gz, .xml[.bz2], .jsonl[.gz|.zst], .parquet, a saved HF dataset)",
    )
    prep.add_argument("--output", help="output directory")
    prep.add_argument("--format", help="auto (by file name), warc, wet, wat, wiki, jsonl, parquet or hf")
    prep.add_argument("--workers", type=int, help="processes, one input file each at a time")
    prep.add_argument(
        "--executor",
        help="local (default) or slurm: one Slurm job array element per input "
        "file (slurm.partition=..., slurm.max_parallel=N, ...)",
    )

    tok = verb(
        data_verbs,
        "train-tokenizer",
        "train a byte-level BPE tokenizer on docs/*.parquet",
        _run_train_tokenizer,
    )
    tok.add_argument("--input", help="docs directory written by `data prep`")
    tok.add_argument("--vocab-size", type=int, help="vocabulary size (default 8192)")
    tok.add_argument(
        "--output", help="directory for tokenizer.json (+ tokenizer_config.json for transformers)"
    )

    tokenize = verb(
        data_verbs, "tokenize", "docs/*.parquet -> Arrow token shards + manifest.json", _run_tokenize
    )
    tokenize.add_argument("--input", nargs="+", help="docs directories written by `data prep`")
    tokenize.add_argument(
        "--tokenizer",
        help="directory holding tokenizer.json, or any tokenizer.json "
        "(GPT-2, Llama, ...: its EOS is found, or set eos_token=...)",
    )
    tokenize.add_argument("--output", help="shards directory")
    tokenize.add_argument("--workers", type=int, help="processes, one docs file each at a time")
    tokenize.add_argument("--shard-size-mb", type=float, help="close a shard at this many MiB (default 256)")
    tokenize.add_argument(
        "--executor",
        help="local (default) or slurm: one Slurm job array element per docs "
        "file (slurm.partition=..., slurm.max_parallel=N, ...)",
    )

    stats = data_verbs.add_parser(
        "stats", help="summarise a prep output (stats.json) or shards dir (manifest.json)"
    )
    stats.add_argument("dir", help="a `data prep` output or a `data tokenize` output")
    stats.set_defaults(run=_run_stats)


def _run_prep(args: argparse.Namespace) -> int:
    from data_prep.config import PrepConfig

    cfg = load_config(
        PrepConfig,
        args,
        input=args.input,
        output=args.output,
        format=args.format,
        workers=args.workers,
        executor=args.executor,
    )
    from data_prep.executor import TaskFailed
    from data_prep.failures import InputsFailed
    from data_prep.prep import run_prep
    from pipeline.core.progress import counting_progress

    try:
        with counting_progress("prep: documents read") as advance:
            stats = run_prep(cfg, progress=advance)
    except InputsFailed as exc:  # the others are written: show them, then what is missing
        _print_summary(Path(cfg.output))
        _warn_errors(exc.stats)
        print(f"lmpipe: error: {exc}", file=sys.stderr)
        return 1
    except TaskFailed as exc:
        print(f"lmpipe: error: {exc}", file=sys.stderr)
        return 1
    _print_summary(Path(cfg.output))
    _warn_errors(stats)
    return 0 if stats else 1


def _warn_errors(stats: dict[str, Any]) -> None:
    """One line on stderr when records could not be read: the run still succeeded (exit 0). Inputs
    that could not be read at all are not records: their own error line names them."""
    from data_prep.failures import REMOTE_FAILED

    totals = stats.get("totals", {}).get("errors", {})
    errors = {kind: n for kind, n in totals.items() if n and kind != f"read/{REMOTE_FAILED}"}
    if errors:
        total = sum(errors.values())
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(errors.items(), key=lambda item: -item[1]))
        print(
            f"lmpipe: warning: {total} record{'s' if total != 1 else ''} could not be read ({kinds}); "
            "see stats.json",
            file=sys.stderr,
        )


def _run_train_tokenizer(args: argparse.Namespace) -> int:
    from data_prep.tokenizer.config import TokenizerTrainConfig

    cfg = load_config(
        TokenizerTrainConfig, args, input=args.input, output=args.output, vocab_size=args.vocab_size
    )
    from data_prep.tokenizer.train import train_tokenizer

    print(f"wrote {train_tokenizer(cfg)}")
    return 0


def _run_tokenize(args: argparse.Namespace) -> int:
    from data_prep.tokenizer.config import TokenizeConfig

    shard_size_bytes = None if args.shard_size_mb is None else int(args.shard_size_mb * 2**20)
    cfg = load_config(
        TokenizeConfig,
        args,
        input=args.input,
        tokenizer=args.tokenizer,
        output=args.output,
        workers=args.workers,
        shard_size_bytes=shard_size_bytes,
        executor=args.executor,
    )
    from data_prep.executor import TaskFailed
    from data_prep.tokenizer.tokenize import tokenize
    from pipeline.core.progress import counting_progress

    try:
        with counting_progress("tokenize: documents") as advance:
            tokenize(cfg, progress=advance)
    except TaskFailed as exc:
        print(f"lmpipe: error: {exc}", file=sys.stderr)
        return 1
    _print_summary(Path(cfg.output))
    return 0


def _run_stats(args: argparse.Namespace) -> int:
    _print_summary(Path(args.dir))
    return 0


def _print_summary(directory: Path) -> None:
    from data_prep.summary import summarize_dir

    print(summarize_dir(directory))
