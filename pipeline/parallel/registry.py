"""Spread a model over ranks by one strategy, behind the one interface the training loop calls.

The loop sees a ``ParallelModel`` (``parallel_base``): call it for the loss, ``backward``
inside ``accumulate(sync=...)``, ``step()`` once per optimizer step, ``save``/``load`` for
checkpoints. It never asks which strategy is underneath. A strategy owns what differs
between them: where the weights live (replicated, FSDP2 shards, ZeRO partitions), mixed
precision (autocast here; a policy for FSDP2; the engine's config for DeepSpeed), gradient
sync, the optimizer and schedule (DeepSpeed's engine steps both), and the checkpoint format.

Gradient contract: the loss handed to ``backward`` is this rank's share of the global
mean, scaled so that averaging gradients over ranks gives the global-batch gradient
(``train.train_step`` does that scaling); every strategy averages over ranks.
"""

from __future__ import annotations

import contextlib
import inspect

import torch
from torch.nn.parallel import DistributedDataParallel

from pipeline.config.parallel import ParallelConfig
from pipeline.config.train import LoopConfig
from pipeline.core.config import require_choice
from pipeline.model.transformer import Transformer
from pipeline.parallel.base import ParallelModel, init_on_cpu, load_model_weights, prepare_blocks
from pipeline.parallel.dist import DistInfo
from pipeline.parallel.fsdp import FSDPModel
from pipeline.parallel.optim import build_optimizer, build_scheduler
from pipeline.parallel.zero import ZeRO1Model, ZeRO2Model, ZeRO3Model

__all__ = ["STRATEGIES", "DDPModel", "ParallelModel", "load_model_weights", "parallelize"]

# The only buffers are the RoPE tables, equal on every rank by construction: no broadcast before each
# forward. torch 2.13 renamed the switch (the old name warns); older torch knows only the old one.
_NO_BUFFER_SYNC = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
    else {"broadcast_buffers": False}
)


class DDPModel(ParallelModel):
    """Replicated weights, gradients all-reduced in the backward pass; one process: the plain module."""

    strategy = "ddp"

    def __init__(
        self,
        model: Transformer,
        *,
        dist: DistInfo,
        loop: LoopConfig,
        total_steps: int,
        options: ParallelConfig,
    ):
        super().__init__(dist=dist, loop=loop, options=options)
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


STRATEGIES: dict[str, type[ParallelModel]] = {
    cls.strategy: cls for cls in (DDPModel, FSDPModel, ZeRO1Model, ZeRO2Model, ZeRO3Model)
}


def parallelize(
    model: Transformer, *, strategy: str | ParallelConfig, dist: DistInfo, loop: LoopConfig, total_steps: int
) -> ParallelModel:
    """Place, initialise and wrap a model built on the meta device (``model.build_model``).

    ``strategy`` is a name (the strategy's default options) or the job's whole ``parallel`` config.
    Call ``torch.manual_seed`` first, with the same seed on every rank: it fixes the initial weights.
    """
    options = strategy if isinstance(strategy, ParallelConfig) else ParallelConfig(strategy=strategy)
    require_choice(options.strategy, "parallel.strategy", STRATEGIES)
    options.check("parallel.")
    loop.grad_accum_steps(dist.world_size)  # a batch the ranks cannot split fails here, before any set-up
    return STRATEGIES[options.strategy](model, dist=dist, loop=loop, total_steps=total_steps, options=options)
