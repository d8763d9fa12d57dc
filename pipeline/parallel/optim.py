"""AdamW with weight decay on matrices only, and the learning-rate schedules (warmup + cosine, or WSD)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import partial

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from pipeline.config.train import LoopConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups of the trainable parameters: 2-D weights (matmuls, embeddings, LoRA's A and B) decay;
    norms' gains and any biases do not. Frozen parameters (LoRA's base weights) are in neither, so they
    get no decay and no optimizer state. A group left empty (LoRA: no 1-D adapters) is left out: the ZeRO
    optimizers drop it themselves, and the LR schedule would then step one group too many."""
    params = [p for p in model.parameters() if p.requires_grad]  # parameters() yields a tied tensor once
    # A parameter partitioned by ZeRO-3's zero.Init is an empty 1-D tensor here: its shape is ds_shape.
    dims = [len(getattr(p, "ds_shape", p.shape)) for p in params]
    groups = [
        {"params": [p for p, dim in zip(params, dims) if dim >= 2], "weight_decay": weight_decay},
        {"params": [p for p, dim in zip(params, dims) if dim < 2], "weight_decay": 0.0},
    ]
    return [group for group in groups if group["params"]]


FUSED_DEVICES = ("cuda", "cpu")
"""Device types with a fused AdamW kernel in torch: the whole update of a tensor in one pass, where the
default CPU path makes a dozen elementwise passes (3-4x the time at our sizes)."""


def use_fused(params: Iterable[torch.Tensor]) -> bool:
    """The fused AdamW kernel when every parameter lives where torch has one (``FUSED_DEVICES``): on CUDA,
    on the CPU, FSDP2's DTensor shards (DTensor implements the fused op) and FSDP's CPU offload alike.
    Elsewhere torch's default path."""
    return all(p.device.type in FUSED_DEVICES for p in params)


def build_optimizer(model: nn.Module, cfg: LoopConfig) -> torch.optim.AdamW:
    """AdamW over ``model``'s parameters; the fused kernel where torch has one (``use_fused``)."""
    return torch.optim.AdamW(
        param_groups(model, cfg.weight_decay),
        lr=cfg.peak_lr,
        betas=(cfg.beta1, cfg.beta2),
        fused=use_fused(model.parameters()) or None,
    )


def lr_factor(
    step: int,
    *,
    warmup_steps: int,
    total_steps: int,
    min_lr_ratio: float,
    schedule: str = "cosine",
    decay_fraction: float = 0.2,
) -> float:
    """Multiplier of the peak lr at optimizer step ``step`` (0-based): linear warmup to 1 over
    ``warmup_steps``, then down to ``min_lr_ratio`` at ``total_steps``: by a cosine, or (``wsd``)
    constant until the last ``decay_fraction`` of the steps and linear over those."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "wsd":
        decay_steps = max(1, round(decay_fraction * total_steps))
        progress = min(1.0, max(0.0, (step - (total_steps - decay_steps)) / decay_steps))
        return 1.0 - (1.0 - min_lr_ratio) * progress
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: LoopConfig, *, total_steps: int) -> LambdaLR:
    return LambdaLR(
        optimizer,
        partial(
            lr_factor,
            warmup_steps=cfg.warmup_steps,
            total_steps=total_steps,
            min_lr_ratio=cfg.min_lr_ratio,
            schedule=cfg.schedule,
            decay_fraction=cfg.decay_fraction,
        ),
    )
