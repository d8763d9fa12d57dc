"""The memory plan (``plan.memory``) against the real thing: the bytes of each rank's weights, gradients and
AdamW state after one optimizer step, under fsdp and ddp on 1, 2 and 4 gloo ranks, for ``tiny`` and ``14m``,
are what the estimate says, within 10%."""

from __future__ import annotations

import pytest
import torch
from torch.distributed.tensor import DTensor

from pipeline.config.model import ModelConfig
from pipeline.config.train import LoopConfig
from pipeline.model.transformer import build_model
from pipeline.parallel.dist import init_distributed
from pipeline.parallel.registry import parallelize
from pipeline.plan.memory import Layout, Workload, estimate
from pipeline.testing import run_distributed_test

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

SIZES = ("tiny", "14m")
STRATEGIES = ("fsdp", "ddp")
VOCAB, SEQ_LEN, MICRO_BATCH = 512, 16, 1
TOLERANCE = 0.10


def local_bytes(tensor: torch.Tensor) -> int:
    local = tensor.to_local() if isinstance(tensor, DTensor) else tensor
    return local.numel() * local.element_size()


def measure(size: str, strategy: str) -> dict[str, int]:
    """One step of one strategy on this rank: its weights', gradients' and optimizer state's bytes."""
    info = init_distributed()
    torch.manual_seed(0)
    args = ModelConfig(size=size, seq_len=SEQ_LEN).args(vocab_size=VOCAB)
    loop = LoopConfig(global_batch_size=MICRO_BATCH * info.world_size, micro_batch_size=MICRO_BATCH)
    parallel = parallelize(build_model(args), strategy=strategy, dist=info, loop=loop, total_steps=2)
    params = list(parallel.model.parameters())
    tokens = torch.randint(0, VOCAB, (MICRO_BATCH, SEQ_LEN + 1))
    with parallel.accumulate(sync=True):
        _, loss = parallel(tokens[:, :-1], tokens[:, 1:])
        parallel.backward(loss)
    grads = sum(local_bytes(p.grad) for p in params if p.grad is not None)
    parallel.step()
    state = parallel.optimizer.state.values()
    optimizer = sum(local_bytes(t) for s in state for t in s.values() if torch.is_tensor(t) and t.dim() > 0)
    return {"params": sum(local_bytes(p) for p in params), "grads": grads, "optimizer": optimizer}


def measure_all() -> dict[tuple[str, str], dict[str, int]]:
    return {(size, strategy): measure(size, strategy) for size in SIZES for strategy in STRATEGIES}


@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_estimate_matches_measured_state_bytes(world_size):
    ranks = run_distributed_test(measure_all, world_size=world_size, timeout_s=300)
    for rank, results in enumerate(ranks):
        for (size, strategy), measured in results.items():
            args = ModelConfig(size=size, seq_len=SEQ_LEN).args(vocab_size=VOCAB)
            work = Workload(args=args, micro_batch_size=MICRO_BATCH, precision="fp32")
            expected = estimate(strategy, work, Layout(nodes=1, gpus_per_node=world_size))
            for key in ("params", "grads", "optimizer"):
                error = getattr(expected, key) / measured[key] - 1
                print(f"{size} {strategy} x{world_size} rank {rank} {key}: {measured[key]} B, {error:+.2%}")
                assert abs(error) <= TOLERANCE, f"{size} {strategy} x{world_size} rank {rank} {key}"
