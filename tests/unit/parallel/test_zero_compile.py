"""torch.compile and activation checkpointing under DeepSpeed ZeRO (issue 20): ZeRO-1/2 compile their blocks
into whole graphs with the eager numbers; ZeRO-3 recomputes checkpointed blocks with its parameter hooks
re-gathering them, and refuses compile, whose graphs its hooks would break at every block. Each case runs
on 2 gloo ranks in fresh processes (DeepSpeed keeps its process group in module state)."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from pipeline.config.model import ModelConfig
from pipeline.config.train import LoopConfig, TrainJobConfig
from pipeline.core.errors import ConfigError
from pipeline.model.transformer import build_model
from pipeline.parallel.base import ParallelModel
from pipeline.parallel.dist import DistInfo, init_distributed
from pipeline.parallel.registry import parallelize
from pipeline.testing import run_distributed_test
from pipeline.train.loop import train_step

ARGS = ModelConfig(size="tiny", seq_len=16).args(vocab_size=101)

pytestmark = pytest.mark.distributed


def build(strategy: str, dist: DistInfo, **loop) -> ParallelModel:
    torch.manual_seed(0)
    config = LoopConfig(global_batch_size=4, micro_batch_size=2, **loop)
    return parallelize(build_model(ARGS), strategy=strategy, dist=dist, loop=config, total_steps=10)


def three_steps(parallel: ParallelModel, dist: DistInfo) -> list[tuple[float, float]]:
    """Each rank its own half of a batch of 4, for 3 steps: (loss, grad norm) of each step."""
    steps = []
    for seed in range(3):
        tokens = torch.randint(
            0, ARGS.vocab_size, (4, ARGS.seq_len + 1), generator=torch.Generator().manual_seed(seed)
        )[2 * dist.rank : 2 * dist.rank + 2]
        steps.append(train_step(parallel, [(tokens[:, :-1], tokens[:, 1:].clone())], dist=dist))
    return steps


def compiled_rank(strategy: str, cache_dir: str) -> tuple[list, list, bool, dict]:
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache_dir
    dist = init_distributed()
    eager = three_steps(build(strategy, dist), dist)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = build(strategy, dist, compile=True, activation_checkpointing=True)
    every_block = all(block._compiled_call_impl is not None for block in compiled.model.layers)
    steps = three_steps(compiled, dist)
    counters = torch._dynamo.utils.counters
    return (
        eager,
        steps,
        every_block,
        {"graphs": counters["stats"]["unique_graphs"], **counters["graph_break"]},
    )


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which(os.environ.get("CXX", "g++")) is None,
    reason="torch.compile's inductor needs a C++ compiler (PLATFORM.md §6)",
)
def test_zero2_compiles_whole_blocks_with_eager_numbers(tmp_path):
    """ZeRO-2 stands for ZeRO-1 too: the same engine and optimizer, plus the gradient-partition hooks that
    a compiled block must not break (a ZeRO-1 case cost CI another ~70 s of compiling)."""
    ranks = run_distributed_test(compiled_rank, timeout_s=600, strategy="zero2", cache_dir=str(tmp_path))
    for eager, compiled, every_block, counters in ranks:
        assert every_block and counters == {"graphs": counters["graphs"]} and counters["graphs"] >= 1
        for (loss, norm), (c_loss, c_norm) in zip(eager, compiled):
            assert abs(loss - c_loss) <= 1e-5 and abs(norm - c_norm) <= 1e-4 * norm


def checkpointed_zero3_rank() -> tuple[list, list, int]:
    dist = init_distributed()
    plain = three_steps(build("zero3", dist), dist)
    checkpointed = build("zero3", dist, activation_checkpointing=True)
    calls = []
    checkpointed.model.layers[0].feed_forward.w1.register_forward_hook(lambda *_: calls.append(1))
    return plain, three_steps(checkpointed, dist), len(calls)


def test_zero3_recomputes_checkpointed_blocks_with_the_same_numbers():
    for plain, checkpointed, calls in run_distributed_test(checkpointed_zero3_rank, timeout_s=300):
        assert [x for step in checkpointed for x in step] == pytest.approx(
            [x for step in plain for x in step], rel=1e-6
        )
        assert calls == 2 * 3  # each step: the forward, then its recomputation in backward


def compiled_zero3_rank() -> str:
    dist = init_distributed()
    with pytest.raises(ConfigError, match="train.compile is not for zero3") as refused:
        build("zero3", dist, compile=True)
    return str(refused.value)


def test_zero3_refuses_compile_before_anything_is_built():
    with pytest.raises(ConfigError, match=r"train\.compile.*zero3"):
        TrainJobConfig.load(None, ["parallel.strategy=zero3", "train.compile=true"])
    assert all("StrategyTraits.compile" in message for message in run_distributed_test(compiled_zero3_rank))
