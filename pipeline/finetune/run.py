"""Supervised fine-tuning: a pretrained checkpoint, chat records, loss on assistant turns only.

The model shape, weights and tokenizer all come from the checkpoint (``init_from``); the batches
come from ``sft_data`` (record formats, chat template, length policy, packing); the loop, logging,
validation, checkpoints and ``result.json`` are pretraining's own (``train.run_job``). The job
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
from pathlib import Path
from typing import Any

import torch

from pipeline.config.finetune import FinetuneJobConfig
from pipeline.finetune.data import ChatTokens, SFTDataset, SFTLoader, read_examples, sft_eval_batches
from pipeline.model.args import ModelArgs
from pipeline.model.lora import META_KEY, apply_lora, parameter_counts
from pipeline.model.lora_config import LoRAConfig
from pipeline.model.transformer import build_model
from pipeline.parallel.dist import init_distributed, shutdown_distributed
from pipeline.parallel.registry import parallelize
from pipeline.train.checkpoint import TOKENIZER_FILE, load_tokenizer, read_meta, resolve_checkpoint
from pipeline.train.pretrain import (
    Batch,
    TrainResult,
    check_resumable,
    plan_steps,
    resume_checkpoint,
    run_job,
    run_tags,
)
from pipeline.train.tracking import Tracker


def finetune(cfg: FinetuneJobConfig) -> TrainResult:
    """Fine-tune the checkpoint ``cfg.init_from`` on ``cfg.data.path``; call it in every rank."""
    started = time.perf_counter()
    dist = init_distributed(cfg.parallel.backend, strategy=cfg.parallel.strategy)
    try:
        init_dir = resolve_checkpoint(cfg.init_from)
        init_meta = read_meta(init_dir)
        args = ModelArgs(**init_meta["model"])
        tokenizer_file = init_dir / TOKENIZER_FILE
        tokenizer = load_tokenizer(tokenizer_file)
        loop = cfg.train
        accum = loop.grad_accum_steps(dist.world_size)
        total_steps = plan_steps(loop, seq_len=args.seq_len)
        data = cfg.data
        examples, stats = read_examples(
            data.path,
            tokenizer,
            seq_len=args.seq_len,
            val_fraction=data.val_fraction,
            columns=data.columns,
            roles=data.roles,
            split=data.split,
            overlong=data.overlong,
        )
        pad = ChatTokens.of(tokenizer, tokenizer_file).pad
        splits = {
            "train": SFTDataset(
                examples["train"], seq_len=args.seq_len, pad=pad, packing=data.packing, seed=loop.seed
            ),
            "val": SFTDataset(examples["val"], seq_len=args.seq_len, pad=pad),
        }
        loader = SFTLoader(
            splits["train"],
            batch_size=loop.micro_batch_size,
            rank=dist.rank,
            world_size=dist.world_size,
            seed=loop.seed,
        )

        def val_batches() -> Iterable[Batch]:
            return sft_eval_batches(
                splits["val"],
                batch_size=loop.micro_batch_size,
                rank=dist.rank,
                world_size=dist.world_size,
                max_batches=loop.eval_batches,
            )

        resume_dir = resume_checkpoint(cfg.output_dir, cfg.checkpoint.resume)
        resume = read_meta(resume_dir) if resume_dir is not None else None
        if resume is not None:
            check_resumable(
                resume,
                resume_dir,
                model_args=args,
                strategy=cfg.parallel.strategy,
                total_steps=total_steps,
                tokenizer_file=tokenizer_file,
            )
            check_same_adapters(resume, resume_dir, cfg.lora)
        model = build_model(args)
        if cfg.lora.enabled:
            apply_lora(model, cfg.lora)
        trainable, total = parameter_counts(model)
        torch.manual_seed(loop.seed)
        parallel = parallelize(model, strategy=cfg.parallel, dist=dist, loop=loop, total_steps=total_steps)
        if resume is None:
            parallel.load(init_dir, model_only=True)
        else:
            parallel.load(resume_dir)
            loader.load_state_dict(resume["loader"])
            if dist.is_main:
                print(f"finetune resuming from {resume_dir} (step {resume['step']})", flush=True)
        if dist.is_main:
            cfg.save(Path(cfg.output_dir) / "config.yaml")
            packed = f" packed into {len(splits['train'])} rows" if data.packing else ""
            print(f"finetune: {data.path}: {stats.summary()}{packed}", flush=True)
            if cfg.lora.enabled:
                print(
                    f"finetune: LoRA rank {cfg.lora.rank} on {', '.join(cfg.lora.targets)}: {trainable:,} of "
                    f"{total:,} parameters train ({trainable / total:.2%})",
                    flush=True,
                )
        params = {
            **cfg.flat(),
            **{f"model.{key}": str(value) for key, value in dataclasses.asdict(args).items()},
            "params.trainable": str(trainable),
            "params.total": str(total),
            **{f"data.stats.{key}": str(value) for key, value in stats.counts().items()},
        }
        tracker = Tracker.start(
            cfg.tracking,
            output_dir=cfg.output_dir,
            params=params,
            active=dist.is_main,
            tags=run_tags(
                n_params=parallel.model.num_params(),
                strategy=cfg.parallel.strategy,
                dist=dist,
                init_from=str(init_dir),
                init_mlflow_run_id=init_meta.get("mlflow_run_id"),
            ),
            run_id=resume["mlflow_run_id"] if resume is not None else None,
        )
        return run_job(
            cfg,
            parallel=parallel,
            loader=loader,
            val_batches=val_batches,
            model_args=args,
            tokenizer_file=tokenizer_file,
            tracker=tracker,
            dist=dist,
            accum_steps=accum,
            total_steps=total_steps,
            label="finetune",
            started=started,
            resume=resume,
        )
    finally:
        shutdown_distributed(dist)


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
        raise ValueError(
            f"checkpoint {step_dir} was trained with {describe(saved)}, this run asks for "
            f"{describe(wanted)}; use another output_dir or checkpoint.resume=never"
        )
