"""Host memory at FSDP start-up: the whole model initialised on the CPU, then sharded (the anchor), against
sharding the meta model first and initialising each rank's shards only (``init.materialize_and_init``).

Issue 16's memory check. Each path runs in fresh processes, ``--ranks`` gloo ranks (default 2) of the
``--size`` ladder model (default ``1.3b``, vocabulary 32000, fp32): build on ``meta``, then

- anchor: ``init_on_cpu`` (every rank holds the whole fp32 model) -> ``fully_shard`` each block and the root;
- ours: ``fully_shard`` each block and the root -> ``materialize_and_init`` on the CPU.

Reported per rank: peak RSS (``ru_maxrss``, torch's own ~0.3-0.5 GB included), how far above the RSS
before the set-up that peak is, and the seconds the set-up took; then ours / anchor of the largest rank's
peak (target < 0.6) and of the set-up's own memory, and whether both paths gave each rank the same shard
(a sum over its local weights).

Run: ``python bench/bench_init_memory.py [--size 1.3b] [--ranks 2]`` (1.3b: ~5.5 GB per rank for the
anchor; ``--size 350m`` for a quick look).
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

from pipeline.config.model import ModelConfig
from pipeline.model.transformer import build_model
from pipeline.parallel.init import init_on_cpu, materialize_and_init
from pipeline.testing import run_distributed_test

VOCAB, SEQ_LEN, SEED = 32000, 2048, 1234
TARGET = 0.6


def start_up(size: str, path: str) -> dict[str, float]:
    """On each rank: one path's set-up of the sharded model; its peak RSS (GB), seconds and shard sum."""
    args = ModelConfig(size=size, seq_len=SEQ_LEN).args(vocab_size=VOCAB)
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    before_gb = current_rss_gb()
    start = time.perf_counter()
    torch.manual_seed(SEED)
    model = build_model(args)
    if path == "anchor":
        init_on_cpu(model)
    for block in model.layers:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    if path == "ours":
        materialize_and_init(model, device="cpu")
    seconds = time.perf_counter() - start
    with torch.no_grad():
        shards = [p.to_local() for p in model.parameters() if isinstance(p, DTensor)]
        checksum = sum(float(shard.double().sum()) for shard in shards)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # Linux: KiB
    return {"peak_gb": peak_gb, "before_gb": before_gb, "seconds": seconds, "checksum": checksum}


def current_rss_gb() -> float:
    """This process's resident memory now (torch, gloo and the imports: what both paths start from)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1.3b", help="ladder rung (default 1.3b)")
    parser.add_argument("--ranks", type=int, default=2, help="gloo ranks (default 2)")
    args = parser.parse_args()
    params = ModelConfig(size=args.size, seq_len=SEQ_LEN).args(vocab_size=VOCAB)
    whole_gb = (params.non_embedding_params() + VOCAB * params.d_model) * 4 / 1e9
    print(f"{args.size}: {whole_gb:.2f} GB of fp32 weights, {args.ranks} ranks, FSDP2 over gloo")
    results = {}
    for path in ("anchor", "ours"):  # one after the other: each path's ranks alone on the machine
        results[path] = run_distributed_test(
            start_up, world_size=args.ranks, timeout_s=1800, size=args.size, path=path
        )
        for rank, found in enumerate(results[path]):
            peak, before, seconds = found["peak_gb"], found["before_gb"], found["seconds"]
            print(
                f"{path:>6} rank {rank}: peak RSS {peak:.2f} GB ({peak - before:.2f} GB above the "
                f"{before:.2f} GB before set-up), set-up {seconds:.1f} s"
            )
    peaks = {path: max(found["peak_gb"] for found in ranks) for path, ranks in results.items()}
    added = {path: max(f["peak_gb"] - f["before_gb"] for f in ranks) for path, ranks in results.items()}
    ratio = peaks["ours"] / peaks["anchor"]
    own = added["ours"] / added["anchor"]
    print(f"ours / anchor of the set-up's own memory (above the RSS before it): {own:.2f}")
    same = all(
        a["checksum"] == o["checksum"] for a, o in zip(results["anchor"], results["ours"], strict=True)
    )
    print(f"ours / anchor peak RSS: {ratio:.2f} (target < {TARGET}); same shards on every rank: {same}")


if __name__ == "__main__":
    main()
