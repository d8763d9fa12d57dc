"""ZeRO-2/3 under train.precision=bf16 sum micro-batch gradients in fp32 on a real 2-rank gloo group
(DeepSpeed's default would be the bf16 of the weights: issue 20)."""

from __future__ import annotations

import pytest
import torch

from pipeline.config.model import ModelConfig
from pipeline.config.train import LoopConfig
from pipeline.model.transformer import build_model
from pipeline.parallel.dist import init_distributed
from pipeline.parallel.registry import parallelize
from pipeline.testing import run_distributed_test

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

ARGS = ModelConfig(size="tiny", seq_len=16).args(vocab_size=101)
LOOP = LoopConfig(global_batch_size=8, micro_batch_size=2, warmup_steps=1, precision="bf16")


def accumulation_dtypes(strategies: list[str]) -> dict[str, tuple[str, str, float]]:
    """Per strategy: (weights' dtype, the ZeRO optimizer's accumulation dtype, one step's grad norm)."""
    info = init_distributed(strategy=strategies[0])
    out = {}
    for strategy in strategies:
        torch.manual_seed(0)
        parallel = parallelize(build_model(ARGS), strategy=strategy, dist=info, loop=LOOP, total_steps=2)
        tokens = torch.randint(0, ARGS.vocab_size, (LOOP.micro_batch_size, ARGS.seq_len))
        for _ in range(LOOP.grad_accum_steps(info.world_size)):
            _, loss = parallel(tokens, tokens)
            parallel.backward(loss)
        norm = parallel.step()
        weight = next(parallel.model.parameters())
        accum = parallel.engine.optimizer.gradient_accumulation_dtype
        out[strategy] = (str(weight.dtype), str(accum), norm)
    return out


def test_zero2_and_zero3_accumulate_bf16_gradients_in_fp32():
    ranks = run_distributed_test(accumulation_dtypes, world_size=2, strategies=["zero2", "zero3"])
    for result in ranks:
        for strategy, (weights, accum, norm) in result.items():
            assert weights == "torch.bfloat16", strategy  # bf16 mode is on: the test is about it
            assert accum == "torch.float32", strategy
            assert norm > 0 and norm != float("inf"), strategy
