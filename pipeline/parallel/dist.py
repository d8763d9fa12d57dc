"""Process-group set-up from the torchrun environment, and the few collectives the loop needs.

One plain process (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) running ddp gets no process
group at all: every helper here then works on the local values, so the training code
is the same with and without torchrun. The sharding strategies (fsdp, zero1-3) are
written against a process group (a device mesh, DeepSpeed's communicator), so one
process running them gets a group of one rank, with an in-process store: nothing to
rendezvous with, no port to pick, and no torchrun needed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from pipeline.config.parallel import DEFAULT_TIMEOUT_S, STRATEGY_TRAITS


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    owns_group: bool = False
    """True when init_distributed created the process group (and shutdown_distributed should end it)."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(
    backend: str = "auto", *, strategy: str = "ddp", timeout_s: float | None = None
) -> DistInfo:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT);
    in one process, make a group of one rank unless ``strategy`` runs without (module docstring).

    ``auto`` picks nccl when CUDA is available, gloo otherwise. A process group that already
    exists (a test harness made it) is reused. ``timeout_s``: how long a collective waits for a rank
    that does not come (hung, or dead without its connections closing, as on a lost node) before it
    fails; None or 0: ``DEFAULT_TIMEOUT_S``, never torch's default (10 min for nccl: too short, see there).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    traits = STRATEGY_TRAITS.get(strategy)
    needs_group = traits is None or traits.needs_process_group  # an unknown name fails later, in parallelize
    owns_group = (world_size > 1 or needs_group) and not dist.is_initialized()
    device_id = device if backend == "nccl" else None
    timeout = timedelta(seconds=timeout_s or DEFAULT_TIMEOUT_S)
    if owns_group and world_size > 1:
        dist.init_process_group(backend, device_id=device_id, timeout=timeout)
    elif owns_group:
        dist.init_process_group(
            backend, store=dist.HashStore(), rank=0, world_size=1, device_id=device_id, timeout=timeout
        )
    if dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistInfo(
        rank=rank, local_rank=local_rank, world_size=world_size, device=device, owns_group=owns_group
    )


def shutdown_distributed(info: DistInfo) -> None:
    """End the process group if ``init_distributed`` made it."""
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(group: dist.ProcessGroup | None = None) -> None:
    """Wait for every rank (of ``group``; default: all); nothing without a process group."""
    if dist.is_initialized():
        dist.barrier(group=group)


def all_reduce_sum(
    values: list[float] | torch.Tensor,
    device: torch.device | str = "cpu",
    *,
    group: dist.ProcessGroup | None = None,
) -> torch.Tensor:
    """Element-wise sum over ranks (of ``group``; default: all) of a small float64 vector (the local values
    when there is no process group)."""
    tensor = torch.as_tensor(values, dtype=torch.float64, device=device).clone()
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)
    return tensor


def broadcast_object(value: object, src: int = 0, *, group: dist.ProcessGroup | None = None) -> object:
    """``value`` as rank ``src`` (a global rank) holds it, on every rank (of ``group``; default: all)."""
    if not dist.is_initialized():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=src, group=group)
    return holder[0]
