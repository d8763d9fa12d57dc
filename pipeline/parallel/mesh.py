"""The device meshes a strategy spreads the model over: data parallel (replicate x shard) x tensor parallel.

One world mesh, its dimensions named as TorchTitan names them, outermost first: ``dp_replicate`` (HSDP:
copies of the sharded model, ``parallel.dp_replicate``), ``dp_shard`` (FSDP2 shards within it; ddp's
replicas) and ``tp`` (``parallel.tp``, innermost, so a tensor-parallel group is consecutive ranks: on a
GPU node, the ones joined by the fastest links). A dimension of size 1 is left out, except ``dp_shard``,
so a plain run keeps the one-dimensional mesh it always had. ``ParallelConfig.dp_rank`` relies on this
order to give every rank of a tensor-parallel group the same batch without asking the mesh.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch.distributed import ProcessGroup
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from pipeline.config.parallel import ParallelConfig
from pipeline.parallel.dist import DistInfo

DP_REPLICATE, DP_SHARD, TP = "dp_replicate", "dp_shard", "tp"


@dataclass(frozen=True)
class Meshes:
    """The sub-meshes of one world mesh that a strategy uses."""

    dp: DeviceMesh
    """Data parallel: what FSDP2 shards over (2-D for HSDP: replicate x shard), or ddp's replicas."""
    tp: DeviceMesh | None
    """Tensor parallel; None without (``parallel.tp`` 1)."""

    @property
    def dp_group(self) -> ProcessGroup:
        """The ranks that hold the same shard of every tensor-parallel weight and read different batches
        (ddp's gradient all-reduce); only a 1-D data-parallel mesh has one group."""
        return self.dp.get_group()


def build_meshes(options: ParallelConfig, dist: DistInfo) -> Meshes:
    """The world mesh for ``options`` (checked by ``ParallelConfig.check_layout``) and its sub-meshes."""
    shard = dist.world_size // (options.dp_replicate * options.tp)
    sizes = {DP_REPLICATE: options.dp_replicate, DP_SHARD: shard, TP: options.tp}
    dims = {name: size for name, size in sizes.items() if size > 1 or name == DP_SHARD}
    world = init_device_mesh(dist.device.type, tuple(dims.values()), mesh_dim_names=tuple(dims))
    if TP not in dims:
        return Meshes(dp=world, tp=None)
    dp_dims = tuple(name for name in (DP_REPLICATE, DP_SHARD) if name in dims)
    return Meshes(dp=world[dp_dims], tp=world[TP])
