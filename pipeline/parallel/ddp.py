"""ddp: replicated weights, gradients all-reduced in the backward pass; one process: the plain module.

With ``parallel.tp`` > 1 each replica is a tensor-parallel group (``tensor_parallel``): DDP's reducer
knows nothing of DTensor shards, so the gradients (each rank's local shards) are averaged over the
replicas by one flat all-reduce after the last micro-step's backward instead, as DDP would at that point.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as torch_dist
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

from pipeline.config.parallel import ParallelConfig
from pipeline.config.train import LoopConfig
from pipeline.model.transformer import Transformer
from pipeline.parallel.base import ParallelModel, prepare_blocks
from pipeline.parallel.dcp import DCPCheckpointer
from pipeline.parallel.dist import DistInfo
from pipeline.parallel.init import init_on_cpu
from pipeline.parallel.mesh import build_meshes
from pipeline.parallel.optim import build_optimizer, build_scheduler
from pipeline.parallel.tensor_parallel import apply_tensor_parallel

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
        init_on_cpu(model).to(dist.device)
        self.replica_group: torch_dist.ProcessGroup | None = None
        """tp > 1 across several replicas: the ranks this one averages its gradient shards with."""
        if options.tp > 1:
            meshes = build_meshes(options, dist)
            assert meshes.tp is not None, "tp > 1 has a tensor-parallel mesh"
            apply_tensor_parallel(model, meshes.tp)
            self.replica_group = meshes.dp_group if meshes.dp.size() > 1 else None
        self.model = prepare_blocks(model, loop)
        self.module = (
            DistributedDataParallel(
                model, device_ids=[dist.device] if dist.device.type == "cuda" else None, **_NO_BUFFER_SYNC
            )
            if dist.is_distributed and options.tp == 1
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
        if isinstance(self.module, DistributedDataParallel):
            return contextlib.nullcontext() if sync else self.module.no_sync()
        if sync and self.replica_group is not None:
            return self._averaged_over_replicas(self.replica_group)
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def _averaged_over_replicas(self, group: torch_dist.ProcessGroup) -> Iterator[None]:
        """After the body's backward: every gradient averaged over the replicas, in one flat all-reduce
        (gloo has no average: a sum, then divided)."""
        yield
        grads = [
            p.grad.to_local() if isinstance(p.grad, DTensor) else p.grad
            for p in self.model.parameters()
            if p.grad is not None
        ]
        with torch.no_grad():
            flat = torch.cat([grad.reshape(-1) for grad in grads])
            torch_dist.all_reduce(flat, group=group)
            flat /= torch_dist.get_world_size(group)
            for grad, averaged in zip(grads, flat.split([grad.numel() for grad in grads])):
                grad.copy_(averaged.view_as(grad))
