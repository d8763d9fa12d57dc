"""``lmpipe eval``: loss and perplexity of a checkpoint on one split of token shards, in one process."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from pipeline.checkpoint import TOKENIZER_FILE, load_model_for_inference, resolve_checkpoint
from pipeline.data import eval_batches, load_manifest
from pipeline.job_config import EvalJobConfig
from pipeline.tracking import file_sha256


@torch.no_grad()
def evaluate(cfg: EvalJobConfig) -> dict:
    """``{"loss", "ppl", "tokens", "batches", "split", "checkpoint"}`` over ``cfg.split`` of ``cfg.shards``.

    Refuses shards made with another tokenizer than the checkpoint's: the numbers would mean nothing.
    """
    step_dir = resolve_checkpoint(cfg.checkpoint)
    manifest = load_manifest(cfg.shards)
    if manifest["tokenizer"]["sha256"] != file_sha256(step_dir / TOKENIZER_FILE):
        raise ValueError(f"{Path(cfg.shards) / 'manifest.json'}: its tokenizer differs from the one of "
                         f"checkpoint {step_dir} (sha256 mismatch)")
    model, args, _ = load_model_for_inference(step_dir)
    loss_sum, tokens, batches = 0.0, 0, 0
    for inputs, targets in eval_batches(cfg.shards, split=cfg.split, seq_len=args.seq_len,
                                        batch_size=cfg.batch_size, max_batches=cfg.max_batches):
        loss_sum += float(model(inputs, targets, reduction="sum")[1])
        tokens += targets.numel()
        batches += 1
    loss = loss_sum / tokens
    return {"loss": loss, "ppl": math.exp(loss), "tokens": tokens, "batches": batches, "split": cfg.split,
            "checkpoint": str(step_dir)}
