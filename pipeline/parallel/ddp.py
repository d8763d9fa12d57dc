"""ddp: replicated weights, gradients all-reduced in the backward pass; one process: the plain module."""

from __future__ import annotations

import contextlib
import inspect
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from pipeline.config.parallel import ParallelConfig
from pipeline.config.train import LoopConfig
from pipeline.model.transformer import Transformer
from pipeline.parallel.base import ParallelModel, init_on_cpu, prepare_blocks
from pipeline.parallel.dcp import DCPCheckpointer
from pipeline.parallel.dist import DistInfo
from pipeline.parallel.optim import build_optimizer, build_scheduler

# The only buffers are the RoPE tables, equal on every rank by construction: no broadcast before each
# forward. torch 2.13 renamed the switch (the old name warns); older torch knows only the old one.
_NO_BUFFER_SYNC: dict[str, Any] = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
    else {"broadcast_buffers": False}
)


class DDPModel(ParallelModel):
    """Replicated weights, gradients all-reduced in the backward pass; one process: the plain module."""

    strategy = "ddp"
    checkpoint_format = "dcp"
    supports_async_save = True
    needs_process_group = False

    def __init__(
        self,
        model: Transformer,
        *,
        dist: DistInfo,
        loop: LoopConfig,
        total_steps: int,
        options: ParallelConfig,
    ):
        super().__init__(model, dist=dist, loop=loop, total_steps=total_steps, options=options)
        self.model = prepare_blocks(init_on_cpu(model).to(dist.device), loop)
        self.module = (
            DistributedDataParallel(
                model, device_ids=[dist.device] if dist.device.type == "cuda" else None, **_NO_BUFFER_SYNC
            )
            if dist.is_distributed
            else model
        )
        self.optimizer = build_optimizer(model, loop)
        self.scheduler = build_scheduler(self.optimizer, loop, total_steps=total_steps)
        self.checkpointer = DCPCheckpointer(self.model, self.optimizer, self.scheduler)

    def __call__(
        self,
        tokens: torch.Tensor,
        targets: torch.Tensor,
        *,
        reduction: str = "mean",
        doc_starts: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with self.autocast():
            return self.module(tokens, targets, reduction=reduction, doc_starts=doc_starts)

    def accumulate(self, *, sync: bool) -> contextlib.AbstractContextManager:
        if sync or not isinstance(self.module, DistributedDataParallel):
            return contextlib.nullcontext()
        return self.module.no_sync()
