"""FSDP2: every transformer block, and the root (embeddings, final norm, head), sharded over the ranks.

Each block is its own ``fully_shard`` unit, so only one block's weights are gathered at a
time; the root unit holds the (possibly tied) embedding and output head. Mixed precision
is FSDP2's policy, not autocast: bf16 weights for compute, fp32 gradient reduction, fp32
sharded master weights for the optimizer. Checkpoints are DCP (``dcp.DCPCheckpointer``):
``get_state_dict`` turns the sharded parameters and optimizer state into DTensors with the
plain model's keys, so a run on any world size resumes them (DCP reshards on load), and one
process reads the weights alone (``load_model_weights``). One process trains on a mesh of one
rank (``init_distributed`` makes its group): the same code, nothing sharded.
"""

from __future__ import annotations

import contextlib
from typing import cast

import torch
from torch.distributed.fsdp import (
    CPUOffloadPolicy,
    FSDPModule,
    MixedPrecisionPolicy,
    OffloadPolicy,
    fully_shard,
)

from pipeline.config.parallel import ParallelConfig
from pipeline.config.train import LoopConfig
from pipeline.model.transformer import Transformer
from pipeline.parallel.base import ParallelModel, prepare_blocks
from pipeline.parallel.dcp import DCPCheckpointer
from pipeline.parallel.dist import DistInfo
from pipeline.parallel.init import materialize_and_init
from pipeline.parallel.mesh import build_meshes
from pipeline.parallel.optim import build_optimizer, build_scheduler
from pipeline.parallel.tensor_parallel import apply_tensor_parallel


class FSDPModel(ParallelModel):
    strategy = "fsdp"
    checkpoint_format = "dcp"
    supports_async_save = True
    needs_process_group = True

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
        self.autocast_dtype = None  # the policy below casts instead
        meshes = build_meshes(options, dist)
        mesh = meshes.dp
        policy = (
            MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
            if loop.precision == "bf16"
            else MixedPrecisionPolicy()
        )
        offload = (
            CPUOffloadPolicy(pin_memory=dist.device.type == "cuda")
            if options.fsdp_cpu_offload
            else OffloadPolicy()
        )
        if meshes.tp is not None:  # on the meta model: DTensors of nothing yet
            apply_tensor_parallel(model, meshes.tp)
        prepare_blocks(model, loop)
        for block in model.layers:
            fully_shard(
                block,
                mesh=mesh,
                mp_policy=policy,
                offload_policy=offload,
                reshard_after_forward=options.fsdp_reshard_after_forward,
            )
        # The root's weights (embeddings, head) are needed again first thing in backward: keep them gathered.
        fully_shard(model, mesh=mesh, mp_policy=policy, offload_policy=offload, reshard_after_forward=False)
        # Each rank allocates and draws only its shards, the same weights as every strategy (parallel.init).
        materialize_and_init(
            model, device="cpu" if options.fsdp_cpu_offload else dist.device, buffer_device=dist.device
        )
        self.model = model  # fully_shard moved parameters and buffers (the RoPE tables) to the mesh's device
        self.optimizer = build_optimizer(model, loop)
        self.scheduler = build_scheduler(self.optimizer, loop, total_steps=total_steps)
        self.checkpointer = DCPCheckpointer(model, self.optimizer, self.scheduler)

    def __call__(
        self,
        tokens: torch.Tensor,
        targets: torch.Tensor,
        *,
        reduction: str = "mean",
        doc_starts: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(tokens, targets, reduction=reduction, doc_starts=doc_starts)

    def accumulate(self, *, sync: bool) -> contextlib.AbstractContextManager:
        # Without sync, FSDP2 keeps this rank's unsharded gradients and reduce-scatters their sum
        # in the first micro-step that syncs: one reduction per optimizer step, as with DDP's no_sync.
        cast(FSDPModule, self.model).set_requires_gradient_sync(sync)  # fully_shard made it an FSDPModule
        return contextlib.nullcontext()
