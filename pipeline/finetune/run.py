"""Supervised fine-tuning: a pretrained checkpoint, chat records, loss on assistant turns only.

The model shape, weights and tokenizer all come from the checkpoint (``init_from``); the batches
come from ``sft_data`` (record formats, chat template, length policy, packing); the loop, logging,
validation, checkpoints and ``result.json`` are pretraining's own (``train.job.run_job``). The job
gets its own MLflow run, tagged with the checkpoint it started from and with the data counts
(``data.stats.*`` params). A fine-tuning job resumes like pretraining (``checkpoint.resume``): from
its own newest checkpoint, with optimizer, schedule, loader and MLflow run, rather than from
``init_from`` again.

With ``lora.rank`` > 0 the checkpoint's weights stay frozen and only low-rank adapters train
(``pipeline.lora``); the checkpoints then hold weights and adapters apart, and every loader merges them.
MLflow gets the trainable and total parameter counts (``params.trainable``, ``params.total``) either way.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from pipeline.config.finetune import FinetuneJobConfig
from pipeline.core.errors import ResumeError
from pipeline.core.files import CONFIG_FILE, TOKENIZER_FILE
from pipeline.finetune.data import (
    ChatTokens,
    SFTDataset,
    SFTLoader,
    SFTStats,
    read_examples,
    sft_eval_batches,
)
from pipeline.model.args import ModelArgs
from pipeline.model.lora import META_KEY, apply_lora, parameter_counts
from pipeline.model.lora_config import LoRAConfig
from pipeline.model.transformer import build_model
from pipeline.parallel.dist import DistInfo, init_distributed, shutdown_distributed
from pipeline.parallel.registry import parallelize
from pipeline.train.checkpoint import load_tokenizer, read_meta, resolve_checkpoint
from pipeline.train.data import Batch
from pipeline.train.job import (
    check_resumable,
    job_checkpointer,
    plan_steps,
    resume_checkpoint,
    run_job,
    run_tags,
)
from pipeline.train.loop import TrainResult, TrainRun
from pipeline.train.tracking import Tracker


def finetune(cfg: FinetuneJobConfig) -> TrainResult:
    """Fine-tune the checkpoint ``cfg.init_from`` on ``cfg.data.path``; call it in every rank."""
    started = time.perf_counter()
    dist = init_distributed(
        cfg.parallel.backend, strategy=cfg.parallel.strategy, timeout_s=cfg.parallel.timeout_seconds
    )
    try:
        return _finetune(cfg, dist, started)
    finally:
        shutdown_distributed(dist)


@dataclass
class SFTData:
    """The fine-tuning data of one rank: its training loader, the validation rows, and the counts."""

    loader: SFTLoader
    val: SFTDataset
    stats: SFTStats
    train_rows: int


def _finetune(cfg: FinetuneJobConfig, dist: DistInfo, started: float) -> TrainResult:
    init_dir = resolve_checkpoint(cfg.init_from)
    init_meta = read_meta(init_dir)
    args = ModelArgs(**init_meta["model"])
    tokenizer_file = init_dir / TOKENIZER_FILE
    loop = cfg.train
    accum = loop.grad_accum_steps(cfg.parallel.dp_size(dist.world_size))  # a TP group reads one batch
    total_steps = plan_steps(loop, seq_len=args.seq_len)
    data = sft_data(cfg, load_tokenizer(tokenizer_file), tokenizer_file, seq_len=args.seq_len, dist=dist)

    def val_batches() -> Iterable[Batch]:
        return sft_eval_batches(
            data.val,
            batch_size=loop.micro_batch_size,
            rank=cfg.parallel.dp_rank(dist.rank),
            world_size=cfg.parallel.dp_size(dist.world_size),
            max_batches=loop.eval_batches,
        )

    resume_dir, resume = _resume_point(cfg, args, total_steps=total_steps, tokenizer_file=tokenizer_file)
    model = apply_lora(build_model(args), cfg.lora) if cfg.lora.enabled else build_model(args)
    trainable, total = parameter_counts(model)
    torch.manual_seed(loop.seed)
    parallel = parallelize(model, strategy=cfg.parallel, dist=dist, loop=loop, total_steps=total_steps)
    if resume_dir is None or resume is None:  # a fresh fine-tune: the pretrained weights
        parallel.load(init_dir, model_only=True)
    else:
        parallel.load(resume_dir)
        data.loader.load_state_dict(resume["loader"])
        if dist.is_main:
            print(f"finetune resuming from {resume_dir} (step {resume['step']})", flush=True)
    if dist.is_main:
        _announce(cfg, data, trainable=trainable, total=total)
    tracker = _start_tracking(
        cfg,
        args,
        data,
        dist=dist,
        counts=(trainable, total),
        n_params=parallel.n_params,
        init=(init_dir, init_meta),
        resume=resume,
    )
    run = TrainRun(
        parallel=parallel,
        loop=loop,
        dist=dist,
        batches=iter(data.loader),
        val_batches=val_batches,
        tracker=tracker,
        checkpointer=job_checkpointer(
            cfg, parallel, dist=dist, tokenizer_file=tokenizer_file, loader=data.loader, tracker=tracker
        ),
        total_steps=total_steps,
        accum_steps=accum,
        label="finetune",
        started=started,
    )
    return run_job(cfg, run, resume=resume)


def _resume_point(
    cfg: FinetuneJobConfig, args: ModelArgs, *, total_steps: int, tokenizer_file: Path
) -> tuple[Path | None, dict[str, Any] | None]:
    """This fine-tune's own checkpoint to continue from (``checkpoint.resume``) and its meta, checked."""
    resume_dir = resume_checkpoint(cfg.output_dir, cfg.checkpoint.resume)
    if resume_dir is None:
        return None, None
    resume = read_meta(resume_dir)
    check_resumable(
        resume,
        resume_dir,
        model_args=args,
        strategy=cfg.parallel.strategy,
        total_steps=total_steps,
        tokenizer_file=tokenizer_file,
    )
    check_same_adapters(resume, resume_dir, cfg.lora)
    return resume_dir, resume


def _start_tracking(
    cfg: FinetuneJobConfig,
    args: ModelArgs,
    data: SFTData,
    *,
    dist: DistInfo,
    counts: tuple[int, int],
    n_params: int,
    init: tuple[Path, dict[str, Any]],
    resume: dict[str, Any] | None,
) -> Tracker:
    """Open (or re-attach to) the MLflow run: the config, model shape, parameter and data counts as params."""
    (trainable, total), (init_dir, init_meta) = counts, init
    params = {
        **cfg.flat(),
        **{f"model.{key}": str(value) for key, value in dataclasses.asdict(args).items()},
        "params.trainable": str(trainable),
        "params.total": str(total),
        **{f"data.stats.{key}": str(value) for key, value in data.stats.counts().items()},
    }
    return Tracker.start(
        cfg.tracking,
        output_dir=cfg.output_dir,
        params=params,
        active=dist.is_main,
        tags=run_tags(
            n_params=n_params,
            strategy=cfg.parallel.strategy,
            dist=dist,
            init_from=str(init_dir),
            init_mlflow_run_id=init_meta.get("mlflow_run_id"),
        ),
        run_id=resume["mlflow_run_id"] if resume is not None else None,
    )


def sft_data(
    cfg: FinetuneJobConfig, tokenizer: Tokenizer, tokenizer_file: Path, *, seq_len: int, dist: DistInfo
) -> SFTData:
    """Read, render and split ``cfg.data`` (``finetune.data``); this rank's loader of the training rows."""
    data, loop = cfg.data, cfg.train
    examples, stats = read_examples(
        data.path,
        tokenizer,
        seq_len=seq_len,
        val_fraction=data.val_fraction,
        columns=data.columns,
        roles=data.roles,
        split=data.split,
        overlong=data.overlong,
    )
    pad = ChatTokens.of(tokenizer, tokenizer_file).pad
    train = SFTDataset(examples["train"], seq_len=seq_len, pad=pad, packing=data.packing, seed=loop.seed)
    val = SFTDataset(examples["val"], seq_len=seq_len, pad=pad)
    loader = SFTLoader(
        train,
        batch_size=loop.micro_batch_size,
        rank=cfg.parallel.dp_rank(dist.rank),
        world_size=cfg.parallel.dp_size(dist.world_size),
        seed=loop.seed,
    )
    return SFTData(loader=loader, val=val, stats=stats, train_rows=len(train))


def _announce(cfg: FinetuneJobConfig, data: SFTData, *, trainable: int, total: int) -> None:
    """Rank 0: write ``config.yaml`` and print the data counts and the LoRA share."""
    cfg.save(Path(cfg.output_dir) / CONFIG_FILE)
    packed = f" packed into {data.train_rows} rows" if cfg.data.packing else ""
    print(f"finetune: {cfg.data.path}: {data.stats.summary()}{packed}", flush=True)
    if cfg.lora.enabled:
        print(
            f"finetune: LoRA rank {cfg.lora.rank} on {', '.join(cfg.lora.targets)}: {trainable:,} of "
            f"{total:,} parameters train ({trainable / total:.2%})",
            flush=True,
        )


def check_same_adapters(meta: dict[str, Any], step_dir: Path, lora: LoRAConfig) -> None:
    """A fine-tune resumes only with the adapters its checkpoint holds (or none, as it has none): one line,
    before the model is built, rather than DCP's error about missing or misshapen tensors."""

    def canonical(adapters: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if adapters is None else {**adapters, "targets": sorted(adapters["targets"])}

    def describe(adapters: dict[str, Any] | None) -> str:
        return "no LoRA" if adapters is None else "LoRA " + ", ".join(f"{k}={v}" for k, v in adapters.items())

    saved = meta.get(META_KEY)
    wanted = dataclasses.asdict(lora) if lora.enabled else None
    if canonical(saved) != canonical(wanted):
        raise ResumeError(
            f"checkpoint {step_dir} was trained with {describe(saved)}, this run asks for "
            f"{describe(wanted)}; use another output_dir or checkpoint.resume=never"
        )
