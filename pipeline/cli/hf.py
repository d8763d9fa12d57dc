"""``lmpipe export hf`` and ``lmpipe import hf``: the flags; the work is ``pipeline.hf``'s (imported late)."""

from __future__ import annotations

import argparse
from typing import Any

from pipeline.core.errors import ConfigError


def add_parsers(verbs: Any) -> None:
    export = verbs.add_parser("export", help="export a checkpoint to another format: hf")
    export_formats = export.add_subparsers(title="formats", metavar="FORMAT")
    hf_export = export_formats.add_parser(
        "hf",
        help="checkpoint -> Hugging Face Llama directory (from_pretrained loads it, offline)",
        description="checkpoint -> Hugging Face Llama directory: config.json, safetensors weights, "
        "generation_config.json and tokenizer files",
    )
    hf_export.add_argument(
        "checkpoint", help="step dir, training output dir, or a `checkpoint consolidate` .safetensors"
    )
    hf_export.add_argument("--output", required=True, help="directory to write (new or empty)")
    hf_export.add_argument(
        "--dtype",
        choices=["float32", "bfloat16"],
        default="float32",
        help="dtype of the weights written (default float32)",
    )
    hf_export.add_argument(
        "--max-shard-size",
        default="5GB",
        help="split the weights into files of at most this size, e.g. 2GB (default 5GB)",
    )
    hf_export.add_argument(
        "--tokenizer", help="tokenizer.json (or its directory) instead of the checkpoint's"
    )
    hf_export.set_defaults(run=_run_export_hf)

    imports = verbs.add_parser("import", help="import a model from another format: hf")
    import_formats = imports.add_subparsers(title="formats", metavar="FORMAT")
    hf_import = import_formats.add_parser(
        "hf",
        help="Hugging Face Llama directory -> checkpoint for finetune --init-from, eval, generate",
        description="Hugging Face Llama directory (config.json, safetensors, tokenizer.json) -> "
        "OUTPUT/checkpoints/step_0/",
    )
    hf_import.add_argument(
        "hf_dir", help="directory holding config.json, model.safetensors[.index.json] and tokenizer.json"
    )
    hf_import.add_argument("--output", required=True, help="output dir (gets checkpoints/step_0/ and latest)")
    hf_import.add_argument(
        "--seq-len",
        type=int,
        help="context length for training and sampling (default: max_position_embeddings)",
    )
    hf_import.set_defaults(run=_run_import_hf)


def _run_export_hf(args: argparse.Namespace) -> int:
    from pipeline.hf.export import export_hf

    output = export_hf(
        args.checkpoint,
        args.output,
        dtype=args.dtype,
        max_shard_size=args.max_shard_size,
        tokenizer=args.tokenizer,
    )
    print(f"wrote {output}")
    return 0


def _run_import_hf(args: argparse.Namespace) -> int:
    if args.seq_len is not None and args.seq_len <= 0:
        raise ConfigError(f"--seq-len must be positive, not {args.seq_len}")
    from pipeline.hf.importer import import_hf

    print(f"wrote {import_hf(args.hf_dir, args.output, seq_len=args.seq_len)}")
    return 0
