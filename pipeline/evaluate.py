"""``lmpipe eval``: loss and perplexity of a checkpoint on one split of token shards, in one process."""

from __future__ import annotations

import math

import torch

from pipeline.checkpoint import TOKENIZER_FILE, load_model_for_inference, resolve_checkpoint
from pipeline.data import ValidationSet, verify_shards
from pipeline.job_config import DataConfig, EvalJobConfig
from pipeline.mixture import validation_sources
from pipeline.model import IGNORE_INDEX


@torch.no_grad()
def evaluate(cfg: EvalJobConfig) -> dict:
    """``{"loss", "ppl", "tokens", "batches", "split", "checkpoint", "by_source"}`` over ``cfg.split`` of
    ``cfg.shards``: every window, or ``max_batches * batch_size`` evenly spaced ones per source.

    Refuses shards made with another tokenizer than the checkpoint's: the numbers would mean nothing.
    """
    step_dir = resolve_checkpoint(cfg.checkpoint)
    model, args, _ = load_model_for_inference(step_dir)
    verify_shards(cfg.shards, tokenizer_path=step_dir / TOKENIZER_FILE, vocab_size=args.vocab_size, check_sha=False)
    sources = validation_sources(DataConfig(shards=cfg.shards, val_split=cfg.split))
    windows = cfg.max_batches * cfg.batch_size if cfg.max_batches else None
    val_set = ValidationSet(sources, split=cfg.split, seq_len=args.seq_len, windows_per_source=windows)
    sums: dict[str, list[float]] = {}
    batches = 0
    for source, inputs, targets in val_set.batches(batch_size=cfg.batch_size):
        entry = sums.setdefault(source, [0.0, 0])
        entry[0] += float(model(inputs, targets, reduction="sum")[1])
        entry[1] += int((targets != IGNORE_INDEX).sum())
        batches += 1
    loss_sum, tokens = sum(s for s, _ in sums.values()), sum(n for _, n in sums.values())
    loss = loss_sum / tokens
    return {"loss": loss, "ppl": math.exp(loss), "tokens": tokens, "batches": batches, "split": cfg.split,
            "checkpoint": str(step_dir), "by_source": {name: s / n for name, (s, n) in sums.items()}}
