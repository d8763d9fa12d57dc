"""Pretraining: build the model, the data and the tracking, then run the shared loop.

``train(cfg)`` runs inside every rank that torchrun starts (or in one plain process): it joins the
process group, builds the model on the meta device, hands it to the parallel strategy, and runs a
``TrainRun`` through ``job.run_job`` (the loop of ``loop.py`` with the hooks of ``hooks.py``), which
fine-tuning (``pipeline.finetune.run``) shares.

Rank 0 prints one line per log interval, logs to MLflow, and writes ``<output_dir>/config.yaml`` at
the start and ``<output_dir>/result.json`` at the end.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from data_prep.tokenizer.manifest import MANIFEST_FILE, load_manifest
from pipeline.config.train import TrainJobConfig
from pipeline.core.errors import ConfigError, InputError
from pipeline.core.files import CONFIG_FILE, file_sha256
from pipeline.model.args import ModelArgs
from pipeline.model.transformer import build_model
from pipeline.parallel.base import ParallelModel
from pipeline.parallel.dist import DistInfo, broadcast_object, init_distributed, shutdown_distributed
from pipeline.parallel.registry import parallelize
from pipeline.train.checkpoint import read_meta, resolve_checkpoint
from pipeline.train.cuda import pin_batches
from pipeline.train.data import TokenLoader, ValBatch, ValidationSet, verify_shards
from pipeline.train.job import (
    check_resumable,
    job_checkpointer,
    plan_steps,
    refuse_another_model,
    resume_checkpoint,
    run_job,
    run_tags,
)
from pipeline.train.lineage import log_shards_inputs
from pipeline.train.loop import TrainEval, TrainResult, TrainRun
from pipeline.train.mixture import sources_from_config, validation_sources
from pipeline.train.tracking import Tracker, model_size_tag


@dataclass
class StartingPoint:
    """Where a pretraining job starts: its own checkpoint
    (resume), another run's weights (init_from), or none."""

    resume_dir: Path | None = None
    resume: dict[str, Any] | None = None
    """The resumed checkpoint's meta."""
    init_dir: Path | None = None
    init_meta: dict[str, Any] = dataclasses.field(default_factory=dict)


def train(cfg: TrainJobConfig) -> TrainResult:
    """Pretrain ``cfg.model`` on ``cfg.data`` (one shards
    directory or a weighted mixture); call it in every rank."""
    started = time.perf_counter()
    dist = init_distributed(
        cfg.parallel.backend, strategy=cfg.parallel.strategy, timeout_s=cfg.parallel.timeout_seconds
    )
    try:
        return _train(cfg, dist, started)
    finally:
        shutdown_distributed(dist)


def _train(cfg: TrainJobConfig, dist: DistInfo, started: float) -> TrainResult:
    specs = sources_from_config(cfg.data)
    directories = list(dict.fromkeys(Path(spec.shards) for spec in specs))
    tokenizer = _shared_tokenizer(directories)
    args = _model_args(cfg, tokenizer)
    _verify_on_main(directories, vocab_size=args.vocab_size, check_sha=cfg.data.verify_sha256, dist=dist)
    loop, dp_rank, dp_size = cfg.train, cfg.parallel.dp_rank(dist.rank), cfg.parallel.dp_size(dist.world_size)
    accum = loop.grad_accum_steps(dp_size)  # split by replica: a tensor-parallel group reads one batch
    total_steps = plan_steps(loop, seq_len=args.seq_len)
    loader = TokenLoader(
        sources=specs,
        split=cfg.data.train_split,
        seq_len=args.seq_len,
        batch_size=loop.micro_batch_size,
        rank=dp_rank,
        world_size=dp_size,
        seed=loop.seed,
        prefetch=cfg.data.prefetch,
        doc_starts=cfg.data.doc_masking,
        unique_windows=cfg.data.unique_tokens // args.seq_len,
        pin_memory=pin_batches(dist.device),
    )
    val_set = ValidationSet.from_sources(
        validation_sources(cfg.data),
        split=cfg.data.val_split,
        seq_len=args.seq_len,
        windows_per_source=cfg.data.val_windows,
    )

    def val_batches() -> Iterable[ValBatch]:
        return val_set.batches(batch_size=loop.micro_batch_size, rank=dp_rank, world_size=dp_size)

    start = starting_point(cfg, args, total_steps=total_steps, tokenizer_file=tokenizer["file"])
    torch.manual_seed(loop.seed)
    parallel = parallelize(
        build_model(args), strategy=cfg.parallel, dist=dist, loop=loop, total_steps=total_steps
    )
    _restore(parallel, loader, start, dist=dist)
    tracker = _start_tracking(cfg, parallel, start, directories=directories, dist=dist)
    run = TrainRun(
        parallel=parallel,
        loop=loop,
        dist=dist,
        batches=iter(loader),
        val_batches=val_batches,
        tracker=tracker,
        checkpointer=job_checkpointer(
            cfg, parallel, dist=dist, tokenizer_file=tokenizer["file"], loader=loader, tracker=tracker
        ),
        total_steps=total_steps,
        accum_steps=accum,
        label="train",
        val_sources=list(val_set.windows),
        data_report=loader.mixture_report,
        train_eval=_train_eval(cfg, loader, dp_rank=dp_rank, dp_size=dp_size),
        started=started,
    )
    return run_job(cfg, run, resume=start.resume)


def _model_args(cfg: TrainJobConfig, tokenizer: dict[str, Any]) -> ModelArgs:
    """The model's shape, its vocabulary the tokenizer's unless the config sets a larger one."""
    args = cfg.model.args(vocab_size=cfg.model.vocab_size or tokenizer["vocab_size"])
    if args.vocab_size < tokenizer["vocab_size"]:
        raise ConfigError(
            f"model.vocab_size {args.vocab_size} is smaller than the vocabulary of "
            f"{tokenizer['file']} ({tokenizer['vocab_size']})"
        )
    return args


def _train_eval(cfg: TrainJobConfig, loader: TokenLoader, *, dp_rank: int, dp_size: int) -> TrainEval | None:
    """``data.train_eval_windows``: the seen training windows, dealt to the data-parallel replicas as
    validation's are (each window once, whatever the world size)."""
    if not cfg.data.train_eval_windows:
        return None

    def batches(samples: int) -> Iterable[ValBatch]:
        subset = loader.seen_subset(samples)
        return subset.batches(batch_size=cfg.train.micro_batch_size, rank=dp_rank, world_size=dp_size)

    return TrainEval(cfg.data.train_eval_windows, batches, [spec.name for spec in loader.sources])


def starting_point(
    cfg: TrainJobConfig, args: ModelArgs, *, total_steps: int, tokenizer_file: Path
) -> StartingPoint:
    """This run's own newest checkpoint (``checkpoint.resume``), else ``init_from``'s weights, else none;
    checked against this model and tokenizer before the model is built."""
    resume_dir = resume_checkpoint(cfg.output_dir, cfg.checkpoint.resume)
    if resume_dir is not None:
        resume = read_meta(resume_dir)
        check_resumable(
            resume,
            resume_dir,
            model_args=args,
            strategy=cfg.parallel.strategy,
            total_steps=total_steps,
            tokenizer_file=tokenizer_file,
        )
        return StartingPoint(resume_dir=resume_dir, resume=resume)
    if not cfg.init_from:
        return StartingPoint()
    init_dir = resolve_checkpoint(cfg.init_from)
    init_meta = read_meta(init_dir)
    check_init_from(init_meta, init_dir, model_args=args, tokenizer_file=tokenizer_file)
    return StartingPoint(init_dir=init_dir, init_meta=init_meta)


def _restore(parallel: ParallelModel, loader: TokenLoader, start: StartingPoint, *, dist: DistInfo) -> None:
    """Load the starting point: everything of a resumed checkpoint, or only the weights of ``init_from``."""
    if start.resume is not None and start.resume_dir is not None:
        parallel.load(start.resume_dir)
        loader.load_state_dict(start.resume["loader"])
        if dist.is_main:
            print(
                f"train resuming from {start.resume_dir} (step {start.resume['step']}, "
                f"{start.resume['tokens_seen']:,} tokens seen)",
                flush=True,
            )
    elif start.init_dir is not None:  # continued pretraining: the weights only, all else starts fresh
        parallel.load(start.init_dir, model_only=True)
        if dist.is_main:
            print(
                f"train starting from the weights of {start.init_dir} (step {start.init_meta['step']})",
                flush=True,
            )


def _start_tracking(
    cfg: TrainJobConfig,
    parallel: ParallelModel,
    start: StartingPoint,
    *,
    directories: list[Path],
    dist: DistInfo,
) -> Tracker:
    """Write ``config.yaml`` (rank 0), open (or re-attach to) the MLflow run, log the config and manifests."""
    if dist.is_main:
        cfg.save(Path(cfg.output_dir) / CONFIG_FILE)
    manifest_shas = ",".join(file_sha256(directory / MANIFEST_FILE) for directory in directories)
    tracker = Tracker.start(
        cfg.tracking,
        output_dir=cfg.output_dir,
        params=cfg.flat(),
        active=dist.is_main,
        tags=run_tags(
            n_params=parallel.n_params,
            strategy=cfg.parallel.strategy,
            dist=dist,
            manifest_sha256=manifest_shas,
            **model_size_tag(cfg.model),
            init_from=str(start.init_dir) if start.init_dir is not None else None,
            init_mlflow_run_id=start.init_meta.get("mlflow_run_id"),
        ),
        run_id=start.resume["mlflow_run_id"] if start.resume is not None else None,
    )
    tracker.log_artifact(Path(cfg.output_dir) / CONFIG_FILE)
    for i, directory in enumerate(directories):
        tracker.log_artifact(directory / MANIFEST_FILE, f"manifests/{i}-{directory.name}")
    log_shards_inputs(tracker, directories, context="train")
    return tracker


def check_init_from(
    meta: dict[str, Any], step_dir: Path, *, model_args: ModelArgs, tokenizer_file: Path
) -> None:
    """Continued pretraining takes weights of this model's shape (seq_len aside: RoPE has no weights)
    trained with this tokenizer (the same ids must mean the
    same text); else one line, before the model is built."""
    saved = dataclasses.replace(ModelArgs(**meta["model"]), seq_len=model_args.seq_len)
    refuse_another_model(
        saved, step_dir, model_args=model_args, tokenizer_file=tokenizer_file, what="init_from"
    )


def _shared_tokenizer(directories: list[Path]) -> dict[str, Any]:
    """The tokenizer every shards directory was made with: ``{"file", "vocab_size", "sha256"}``.
    Directories tokenized differently cannot be mixed (the same id would mean different text)."""
    found: dict[str, Any] | None = None
    for directory in directories:
        entry = load_manifest(directory)["tokenizer"]
        tokenizer = {
            "file": directory / entry["path"],
            "vocab_size": entry["vocab_size"],
            "sha256": entry["sha256"],
        }
        if found is not None and tokenizer["sha256"] != found["sha256"]:
            raise InputError(
                f"{directory / MANIFEST_FILE} was tokenized with another tokenizer than "
                f"{found['file']}; a mixture needs one tokenizer"
            )
        found = found or tokenizer
    assert found is not None, "sources_from_config returns at least one source"
    return found


def _verify_on_main(directories: list[Path], *, vocab_size: int, check_sha: bool, dist: DistInfo) -> None:
    """Rank 0 checks the shards (``data.verify_shards``) before the first step; a problem stops every
    rank with rank 0's one-line message, instead of rank 0 failing while the others wait in a collective."""
    problem = ""
    if dist.is_main:
        try:
            for directory in directories:
                verify_shards(directory, tokenizer_path=None, vocab_size=vocab_size, check_sha=check_sha)
        except (ValueError, FileNotFoundError) as exc:
            problem = str(exc)
    problem = str(broadcast_object(problem))
    if problem:
        raise InputError(problem)
