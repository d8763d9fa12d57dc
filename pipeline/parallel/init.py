"""Initial weights of a model whose parameters may be sharded: each rank materialises and draws only its part.

Every parameter has a generator of its own (``pipeline.model.init``): its full tensor is drawn on the CPU,
one parameter at a time, and each rank keeps its part of it: the whole tensor for a plain parameter, its
local shard for a DTensor (FSDP2 ``fully_shard``, tensor parallel, or both), cut by the DTensor's own mesh
and placements. So the same seed gives the same starting weights under ddp, fsdp and zero1-3, any world
size, any TP or HSDP layout and any device, while no rank holds more than its shards plus one full
parameter at a time.
"""

from __future__ import annotations

import torch
from torch.distributed.tensor import DTensor, distribute_tensor

from pipeline.model.init import full_parameter
from pipeline.model.transformer import Transformer, rope_tables


@torch.no_grad()
def materialize_and_init(
    model: Transformer,
    *,
    device: torch.device | str,
    seed: int | None = None,
    buffer_device: torch.device | str | None = None,
) -> Transformer:
    """Materialise a meta-built model on ``device`` (``to_empty``) and draw its initial weights, each rank
    only its own part of each parameter (see the module docstring).

    Its parameters may be plain tensors or DTensors: call it after ``fully_shard`` / ``parallelize_module``
    on the meta model, and each rank allocates only its shards. Parameter names must be the plain model's
    (wrap with DDP or DeepSpeed after, not before). ``seed`` None: the seed the caller gave
    ``torch.manual_seed`` (``torch.initial_seed``; the same on every rank: ``registry.parallelize``).
    ``buffer_device``: where the RoPE tables go, if not to ``device`` (FSDP's CPU offload keeps the
    shards in host memory, the forward pass needs the tables on the GPU)."""
    seed = torch.initial_seed() if seed is None else seed
    model.to_empty(device=device)
    model.tie_weights()  # to_empty made new plain tensors; a DTensor head keeps its tie (swapped in place)
    n_layers = model.args.n_layers
    for name, param in model.named_parameters():  # a tied head is listed once, as tok_embeddings.weight
        full = full_parameter(name, param.shape, seed=seed, n_layers=n_layers)
        if isinstance(param, DTensor):
            local = distribute_tensor(
                full.to(param.device), param.device_mesh, param.placements, src_data_rank=None
            ).to_local()
            param.to_local().copy_(local)
        else:
            param.copy_(full)
        del full
    model.rope_cos, model.rope_sin = rope_tables(model.args, device=buffer_device or device)
    return model


def init_on_cpu(model: Transformer) -> Transformer:
    """Materialise a meta-built, unsharded model on the CPU and draw its initial weights by the per-parameter
    rule (``materialize_and_init``), from the seed the caller gave ``torch.manual_seed``. For the strategies
    that place or wrap a whole model (ddp, zero1-2, and zero3 for a model with LoRA adapters)."""
    return materialize_and_init(model, device="cpu")
