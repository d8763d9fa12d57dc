"""ZeRO-3 builds the model under ``deepspeed.zero.Init`` (issue 20): each rank holds only its partitions from
construction on, never the whole model, and still starts from the weights every strategy starts from."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.config.model import ModelConfig
from pipeline.config.train import LoopConfig
from pipeline.model.transformer import build_model
from pipeline.parallel import zero
from pipeline.parallel.dist import init_distributed
from pipeline.parallel.init import init_on_cpu
from pipeline.parallel.optim import param_groups
from pipeline.parallel.registry import parallelize
from pipeline.testing import run_distributed_test

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

# wq is 320 x 320: over DeepSpeed's stage3_param_persistence_threshold (1e5), so it is partitioned.
ARGS = ModelConfig(size="tiny", seq_len=16, d_model=320).args(vocab_size=101)
LOOP = LoopConfig(global_batch_size=4, micro_batch_size=2, warmup_steps=1)
SEED = 1234


def build_zero3() -> dict:
    """On each rank: what each parameter held when the model was just built; the weights it starts from."""
    info = init_distributed(strategy="zero3")
    at_construction: dict[str, tuple[int, int, int]] = {}
    draw = zero.init_partitioned

    def spy(model, deepspeed, *, device):
        for name, param in model.named_parameters():
            at_construction[name] = (param.numel(), param.ds_tensor.numel(), param.ds_numel)
        return draw(model, deepspeed, device=device)

    def whole_model(model):
        raise AssertionError("zero3 materialised the whole model")

    decays: list[tuple[int, float]] = []
    build_optimizer = zero.build_optimizer

    def optimizer_spy(model, loop):  # its groups as built, before DeepSpeed swaps in flat partitions
        optimizer = build_optimizer(model, loop)
        decays.extend((len(group["params"]), group["weight_decay"]) for group in optimizer.param_groups)
        return optimizer

    zero.init_partitioned, zero.init_on_cpu, zero.build_optimizer = spy, whole_model, optimizer_spy
    torch.manual_seed(SEED)
    parallel = parallelize(build_model(ARGS), strategy="zero3", dist=info, loop=LOOP, total_steps=2)
    params = dict(parallel.model.named_parameters())
    with parallel.deepspeed.zero.GatheredParameters(list(params.values())):
        weights = {name: p.detach().clone() for name, p in params.items()}
    return {"at_construction": at_construction, "weights": weights, "decays": decays}


def test_zero3_parameters_are_partitioned_from_construction_with_the_common_initial_weights():
    ranks = run_distributed_test(build_zero3, world_size=2)
    torch.manual_seed(SEED)
    model = init_on_cpu(build_model(ARGS))
    expected, groups = dict(model.named_parameters()), param_groups(model, LOOP.weight_decay)
    for result in ranks:
        wq = result["at_construction"]["layers.0.attention.wq.weight"]
        assert wq == (0, math.ceil(320 * 320 / 2), 320 * 320)  # empty locally, its half partitioned
        assert sum(local for local, _, _ in result["at_construction"].values()) < 0.1 * sum(
            p.numel() for p in expected.values()
        )  # what stays whole on every rank: the small (persistent) ones
        # matrices decay and gains do not, though a partitioned matrix is an empty 1-D tensor locally
        assert result["decays"] == [(len(group["params"]), group["weight_decay"]) for group in groups]
        assert sorted(result["weights"]) == sorted(expected)
        for name, weight in result["weights"].items():
            assert torch.equal(weight, expected[name]), name
