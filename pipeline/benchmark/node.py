"""``lmpipe bench node``: every rank measures, rank 0 reports for all (one table, one JSON).

Run it as ``lmpipe train`` runs: in one process, or under torchrun / ``lmpipe launch slurm`` on every
node. Each rank measures its own matmul and training step; the all-reduce is measured over all ranks,
and with several nodes also within each node (NVLink) apart from across them (the network). The
per-node summary gives each node's slowest rank: one sick GPU slows every step of a job.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import socket
from typing import Any

import torch
import torch.distributed as dist

from pipeline.benchmark.collectives import measure_all_reduce, node_groups
from pipeline.benchmark.config import NodeBenchConfig
from pipeline.benchmark.matmul import measure_matmul
from pipeline.benchmark.results import percent
from pipeline.benchmark.timed_run import timed_run
from pipeline.core.files import atomic_write_json
from pipeline.parallel.dist import DistInfo, init_distributed, shutdown_distributed
from pipeline.train.tracking import git_commit

GiB = 1024**3
MiB = 1024**2


def bench_node(cfg: NodeBenchConfig, *, json_path: str | None = None) -> dict[str, Any] | None:
    """Measure on every rank; rank 0 prints the table, writes ``json_path`` and returns the report (the
    other ranks return None)."""
    info = init_distributed("auto", strategy=cfg.strategy)
    try:
        results = _gather(measure_rank(cfg, info))
    finally:
        shutdown_distributed(info)
    if not info.is_main:
        return None
    report = summarise(cfg, results)
    print(format_report(report), flush=True)
    if json_path:
        atomic_write_json(json_path, report)
        print(f"wrote {json_path}", flush=True)
    return report


def device_name(device: torch.device) -> str:
    """The GPU's name (what the peak table matches), or the CPU's kind and torch's thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def node_name(host: str) -> str:
    """What tells this rank's node from the others: the host name, and the node rank torchrun gives each
    node's launcher (``GROUP_RANK``), since two launchers on one host are two nodes to the job."""
    group_rank = os.environ.get("GROUP_RANK")
    return host if group_rank is None else f"{host} (node {group_rank})"


def measure_rank(cfg: NodeBenchConfig, info: DistInfo) -> dict[str, Any]:
    """This rank's measurements, as plain data: all-reduce (all ranks; within its node when there are
    several), matmul, then the timed run (last: its peak memory should be its own)."""
    host = socket.gethostname()
    node = node_name(host)
    nodes = [str(name) for name in _gather(node)]
    size = cfg.all_reduce_mib * MiB
    world = measure_all_reduce(size, info.device) if dist.is_initialized() else None
    within_node = None
    if len(set(nodes)) > 1:
        node_ranks, groups = node_groups(nodes)
        mine = next(i for i, ranks in enumerate(node_ranks) if info.rank in ranks)
        within_node = measure_all_reduce(size, info.device, group=groups[mine])
    matmul = measure_matmul(cfg.matmul_n, cfg.precision, info.device)
    run = timed_run(cfg, info)
    return {
        "rank": info.rank,
        "local_rank": info.local_rank,
        "host": host,
        "node": node,
        "device": device_name(info.device),
        "all_reduce": _plain(world),
        "all_reduce_within_node": _plain(within_node),
        "matmul": _plain(matmul),
        "train": _plain(run),
    }


def summarise(cfg: NodeBenchConfig, ranks: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON report: set-up, the figures of the whole job (its slowest rank's), per node, per rank."""
    slowest = min(ranks, key=lambda r: r["train"]["tokens_per_s_per_device"])
    reduces = [r["all_reduce"] for r in ranks if r["all_reduce"] is not None]
    nodes = list(dict.fromkeys(r["node"] for r in ranks))
    return {
        "benchmark": "lmpipe bench node",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": ranks[0]["device"],
        "world_size": len(ranks),
        "nodes": len(nodes),
        "config": dataclasses.asdict(cfg),
        # A collective ends when its slowest rank does: the job's all-reduce time is the largest median.
        "all_reduce": max(reduces, key=lambda r: r["seconds"]) if reduces else None,
        "train": {
            **slowest["train"],
            "peak_memory_bytes": max(r["train"]["peak_memory_bytes"] for r in ranks),
        },
        "per_node": [_node_summary(node, [r for r in ranks if r["node"] == node]) for node in nodes],
        "per_rank": ranks,
    }


def _node_summary(node: str, ranks: list[dict[str, Any]]) -> dict[str, Any]:
    """One node: its ranks, slowest matmul, largest peak memory and own all-reduce (with several nodes)."""
    matmul = min((r["matmul"] for r in ranks), key=lambda m: m["tflops"])
    within = [r["all_reduce_within_node"] for r in ranks if r["all_reduce_within_node"] is not None]
    return {
        "node": node,
        "ranks": [r["rank"] for r in ranks],
        "matmul_tflops": matmul["tflops"],
        "matmul_fraction_of_peak": matmul["fraction_of_peak"],
        "tokens_per_s_per_device": min(r["train"]["tokens_per_s_per_device"] for r in ranks),
        "peak_memory_bytes": max(r["train"]["peak_memory_bytes"] for r in ranks),
        "all_reduce_within_node": max(within, key=lambda r: r["seconds"]) if within else None,
    }


def format_report(report: dict[str, Any]) -> str:
    """The report as the table rank 0 prints."""
    cfg, train = report["config"], report["train"]
    lines = [
        f"lmpipe bench node: {report['world_size']} rank(s) on {report['nodes']} node(s), "
        f"{report['device']}, torch {report['torch']}, commit {(report['commit'] or 'unknown')[:12]}",
        _all_reduce_line("all-reduce", report["all_reduce"]),
        f"{'node':<20} {'ranks':>7} {'matmul ' + cfg['precision'] + ' n=' + str(cfg['matmul_n']):>22} "
        f"{'of peak':>8} {'tokens/s/dev':>13} {'peak memory':>12}",
    ]
    for node in report["per_node"]:
        ranks = f"{node['ranks'][0]}-{node['ranks'][-1]}" if len(node["ranks"]) > 1 else str(node["ranks"][0])
        lines.append(
            f"{node['node'][:20]:<20} {ranks:>7} {node['matmul_tflops']:>14.2f} TFLOP/s "
            f"{percent(node['matmul_fraction_of_peak']):>8} {node['tokens_per_s_per_device']:>13,.0f} "
            f"{node['peak_memory_bytes'] / GiB:>8.2f} GiB"
        )
        if node["all_reduce_within_node"] is not None:
            lines.append(_all_reduce_line(f"  within {node['node']}", node["all_reduce_within_node"]))
    lines += [
        f"train {cfg['size']} ({train['n_params']:,} non-embedding parameters), {cfg['strategy']}, "
        f"{cfg['precision']}, compile {'on' if cfg['compile'] else 'off'}, "
        f"micro-batch {cfg['micro_batch']} x {cfg['seq_len']} per rank: {train['steps']} steps in "
        f"{train['seconds']:.1f} s after {cfg['warmup_steps']} warm-up steps",
        f"  {train['tokens_per_s_per_device']:,.0f} tokens/s per device, MFU {percent(train['mfu'])}, "
        f"peak memory {train['peak_memory_bytes'] / GiB:.2f} GiB ({train['memory_kind']})"
        + (f", {train['skipped_steps']} skipped steps (non-finite)" if train["skipped_steps"] else ""),
    ]
    return "\n".join(lines)


def _all_reduce_line(label: str, result: dict[str, Any] | None) -> str:
    if result is None:
        return f"{label}: not measured (one process without a process group: ddp runs without one)"
    busbw = result["busbw_gbps"]
    return (
        f"{label}: {result['bytes'] / MiB:g} MiB fp32 over {result['ranks']} rank(s), median "
        f"{result['seconds'] * 1e3:.2f} ms, algbw {result['algbw_gbps']:.2f} GB/s, busbw "
        + ("undefined (one rank)" if busbw is None else f"{busbw:.2f} GB/s")
    )


def _plain(result: Any) -> dict[str, Any] | None:
    return None if result is None else dataclasses.asdict(result)


def _gather(value: Any) -> list[Any]:
    """``value`` of every rank, in rank order (the one value without a process group)."""
    if not dist.is_initialized():
        return [value]
    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values
