"""parallel.tp and parallel.dp_replicate: which strategies take them, and the checks of a layout against
the world size, the model's shape and the job (torch-free, or on a meta model: before any set-up)."""

from __future__ import annotations

import dataclasses

import pytest

from pipeline.config.model import ModelConfig
from pipeline.config.parallel import ParallelConfig
from pipeline.config.train import LoopConfig, TrainJobConfig
from pipeline.core.errors import ConfigError
from pipeline.model.lora import apply_lora
from pipeline.model.lora_config import LoRAConfig
from pipeline.model.transformer import build_model
from pipeline.parallel.dist import DistInfo
from pipeline.parallel.registry import parallelize

TINY = ModelConfig(size="tiny", seq_len=16).args(vocab_size=104)  # 4 heads, 2 kv heads, ffn 384


def load(*overrides: str) -> TrainJobConfig:
    return TrainJobConfig.load(None, ["data.shards=/tmp/shards", *overrides])


@pytest.mark.parametrize(
    "overrides",
    [
        ("parallel.strategy=ddp", "parallel.tp=2"),
        ("parallel.strategy=fsdp", "parallel.tp=2"),
        ("parallel.strategy=fsdp", "parallel.dp_replicate=2"),
        ("parallel.strategy=fsdp", "parallel.dp_replicate=2", "parallel.tp=2"),
    ],
)
def test_tp_and_hsdp_options_are_accepted_where_they_apply(overrides):
    load(*overrides)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ("parallel.strategy=zero1", "parallel.tp=2"),
            "parallel.tp: only for strategy ddp/fsdp (strategy is zero1)",
        ),
        (
            ("parallel.strategy=zero3", "parallel.tp=2"),
            "parallel.tp: only for strategy ddp/fsdp (strategy is zero3)",
        ),
        (
            ("parallel.strategy=ddp", "parallel.dp_replicate=2"),
            "parallel.dp_replicate: only for strategy fsdp (strategy is ddp)",
        ),
        (("parallel.strategy=fsdp", "parallel.tp=0"), "parallel.tp: must be >= 1, got 0"),
        (("parallel.strategy=fsdp", "parallel.dp_replicate=0"), "parallel.dp_replicate: must be >= 1, got 0"),
    ],
)
def test_a_misplaced_or_bad_layout_option_is_one_line(overrides, message):
    with pytest.raises(ConfigError) as error:
        load(*overrides)
    assert str(error.value) == f"config error: {message}"


@pytest.mark.parametrize(
    ("options", "world_size", "shape", "message"),
    [
        ({"tp": 2}, 3, {}, "parallel.tp: world_size 3 is not a multiple of tp x dp_replicate = 2"),
        (
            {"strategy": "fsdp", "tp": 2, "dp_replicate": 2},
            6,
            {},
            "parallel.dp_replicate: world_size 6 is not a multiple of tp x dp_replicate = 4",
        ),
        ({"tp": 3}, 6, {}, "parallel.tp: model.n_heads 4 is not a multiple of tp 3"),
        ({"tp": 4}, 4, {}, "parallel.tp: model.n_kv_heads 2 is not a multiple of tp 4"),
        ({"tp": 2}, 2, {"ffn_hidden": 385}, "parallel.tp: model.ffn_hidden 385 is not a multiple of tp 2"),
        (
            {"tp": 2},
            2,
            {"vocab_size": 101},
            "parallel.tp: model.vocab_size 101 is not a multiple of tp 2; pad it with model.vocab_size",
        ),
        ({"tp": 2}, 2, {"seq_len": 15}, "parallel.tp: model.seq_len 15 is not a multiple of tp 2"),
    ],
)
def test_a_layout_the_ranks_or_the_shape_do_not_fit_is_one_line(options, world_size, shape, message):
    with pytest.raises(ConfigError) as error:
        ParallelConfig(**options).check_layout(
            world_size=world_size, model=dataclasses.replace(TINY, **shape)
        )
    assert str(error.value) == f"config error: {message}"


@pytest.mark.parametrize(
    ("options", "world_size"),
    [({}, 3), ({"tp": 2}, 2), ({"tp": 2}, 8), ({"strategy": "fsdp", "tp": 2, "dp_replicate": 2}, 8)],
)
def test_a_layout_that_fits_passes(options, world_size):
    ParallelConfig(**options).check_layout(world_size=world_size, model=TINY)


def test_ranks_of_a_tensor_parallel_group_share_a_data_parallel_rank():
    options = ParallelConfig(strategy="fsdp", tp=2, dp_replicate=2)
    assert [options.dp_rank(rank) for rank in range(8)] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert options.dp_size(8) == 4
    assert ParallelConfig().dp_rank(3) == 3 and ParallelConfig().dp_size(4) == 4


@pytest.mark.parametrize(
    ("lora", "eval_tasks", "message"),
    [
        (True, [], "LoRA adapters are not split by tensor parallelism"),
        (False, ["tasks/hellaswag.jsonl"], "train.eval_tasks score sequences of any length"),
    ],
)
def test_what_tensor_parallelism_cannot_split_is_refused_before_any_setup(lora, eval_tasks, message):
    model = build_model(TINY)  # stays on meta: nothing was materialised
    if lora:
        model = apply_lora(model, LoRAConfig(rank=4))
    with pytest.raises(ConfigError, match=f"^config error: parallel.tp: {message}"):
        parallelize(
            model,
            strategy=ParallelConfig(strategy="fsdp", tp=2),
            dist=DistInfo(world_size=2),
            loop=LoopConfig(global_batch_size=8, micro_batch_size=2, eval_tasks=eval_tasks),
            total_steps=10,
        )
    assert model.output.weight.is_meta
