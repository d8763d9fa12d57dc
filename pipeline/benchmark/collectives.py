"""All-reduce bandwidth by the nccl-tests convention (``doc/PERFORMANCE.md`` of NVIDIA/nccl-tests).

algbw = bytes / time. busbw = algbw x 2(n-1)/n: a ring all-reduce moves each byte 2(n-1)/n times over
every link, so busbw is what the slowest link carried and compares across world sizes with the
hardware's link speed. With one rank nothing crosses a link: busbw is undefined (None), and algbw is
only the local copy's speed.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from pipeline.parallel.dist import barrier


@dataclass(frozen=True)
class AllReduceResult:
    """One rank's view of an all-reduce of ``bytes`` over ``ranks`` ranks."""

    bytes: int
    ranks: int
    iterations: int
    seconds: float
    """Median time of one all-reduce on this rank."""
    algbw_gbps: float
    """GB/s (10^9 bytes, as nccl-tests prints)."""
    busbw_gbps: float | None
    """None with one rank (module docstring)."""


def bus_bandwidth(algbw: float, ranks: int) -> float | None:
    """nccl-tests' all-reduce bus bandwidth: ``algbw`` x 2(n-1)/n; None for one rank."""
    return algbw * 2 * (ranks - 1) / ranks if ranks > 1 else None


def measure_all_reduce(
    size_bytes: int,
    device: torch.device,
    *,
    group: dist.ProcessGroup | None = None,
    warmup: int = 3,
    iterations: int = 10,
) -> AllReduceResult:
    """Median time of ``iterations`` fp32 sum all-reduces of ``size_bytes`` over ``group`` (default: all
    ranks), after ``warmup`` untimed ones (the first builds nccl's rings). Every rank of the group calls it.
    Each is timed alone, the device synchronised around it: a median of separate operations, not the
    mean of a pipelined stream, so a slow outlier (another job's traffic) does not move it."""
    tensor = torch.ones(size_bytes // 4, dtype=torch.float32, device=device)
    ranks = dist.get_world_size(group)
    for _ in range(warmup):
        dist.all_reduce(tensor, group=group)
    synchronize(device)
    times = []
    for _ in range(iterations):
        barrier(group)  # all ranks start together, or the first one in times the others' lateness
        synchronize(device)
        start = time.perf_counter()
        dist.all_reduce(tensor, group=group)
        synchronize(device)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    algbw = tensor.numel() * tensor.element_size() / seconds / 1e9
    return AllReduceResult(
        bytes=tensor.numel() * tensor.element_size(),
        ranks=ranks,
        iterations=iterations,
        seconds=seconds,
        algbw_gbps=algbw,
        busbw_gbps=bus_bandwidth(algbw, ranks),
    )


def node_groups(nodes: list[str]) -> tuple[list[list[int]], list[dist.ProcessGroup | None]]:
    """The global ranks of each node (in order of first rank) and a process group of each; every rank
    calls it (``new_group`` is collective over the whole world) with the same ``nodes``, rank i's at i."""
    members: dict[str, list[int]] = {}
    for rank, node in enumerate(nodes):
        members.setdefault(node, []).append(rank)
    ranks = list(members.values())
    return ranks, [dist.new_group(node_ranks) for node_ranks in ranks]


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (a CUDA stream runs behind the host); nothing on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
