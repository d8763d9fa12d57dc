"""parallel.* config: strategies, options that belong to one strategy, and the generated ds_config."""

from __future__ import annotations

import pytest

from pipeline.config import parallel as parallel_config
from pipeline.config.parallel import ParallelConfig
from pipeline.config.train import LoopConfig, TrainJobConfig
from pipeline.core.errors import ConfigError
from pipeline.parallel.registry import STRATEGIES
from pipeline.parallel.zero import ds_config


def load(*overrides: str) -> TrainJobConfig:
    return TrainJobConfig.load(None, ["data.shards=/tmp/shards", *overrides])


def test_every_configurable_strategy_is_implemented():
    assert tuple(STRATEGIES) == parallel_config.STRATEGIES


@pytest.mark.parametrize("strategy", parallel_config.STRATEGIES)
def test_each_strategy_loads_with_its_defaults(strategy):
    assert load(f"parallel.strategy={strategy}").parallel.strategy == strategy


def test_unknown_strategy_names_the_choices():
    with pytest.raises(
        ConfigError,
        match=r"^config error: parallel.strategy: got 'zero4'; valid choices: "
        r"ddp, fsdp, zero1, zero2, zero3$",
    ):
        load("parallel.strategy=zero4")


@pytest.mark.parametrize(
    ("strategy", "option", "owner"),
    [
        ("ddp", "parallel.zero_offload_optimizer=true", "zero1/zero2/zero3"),
        ("fsdp", "parallel.zero_offload_optimizer=true", "zero1/zero2/zero3"),
        ("zero2", "parallel.zero_offload_params=true", "zero3"),
        ("ddp", "parallel.fsdp_cpu_offload=true", "fsdp"),
        ("zero3", "parallel.fsdp_reshard_after_forward=false", "fsdp"),
    ],
)
def test_an_option_of_another_strategy_is_an_error(strategy, option, owner):
    key = option.split("=")[0]
    with pytest.raises(ConfigError) as error:
        load(f"parallel.strategy={strategy}", option)
    assert str(error.value) == f"config error: {key}: only for strategy {owner} (strategy is {strategy})"


@pytest.mark.parametrize(
    ("strategy", "option"),
    [
        ("fsdp", "parallel.fsdp_cpu_offload=true"),
        ("fsdp", "parallel.fsdp_reshard_after_forward=false"),
        ("zero1", "parallel.zero_offload_optimizer=true"),
        ("zero3", "parallel.zero_offload_params=true"),
    ],
)
def test_an_option_of_its_own_strategy_is_accepted(strategy, option):
    load(f"parallel.strategy={strategy}", option)


def test_ds_config_follows_our_config():
    loop = LoopConfig(global_batch_size=32, micro_batch_size=4, grad_clip=0.5, precision="bf16")
    options = ParallelConfig(strategy="zero3", zero_offload_optimizer=True, zero_offload_params=True)
    config = ds_config(loop, options, stage=3, world_size=2, on_cuda=True)
    assert (
        config["train_batch_size"],
        config["train_micro_batch_size_per_gpu"],
        config["gradient_accumulation_steps"],
    ) == (32, 4, 4)
    assert config["managed_gradient_accumulation"] is False  # step() is the accumulation boundary
    assert config["gradient_clipping"] == 0.5
    assert config["bf16"] == {"enabled": True} and config["communication_data_type"] == "fp32"
    assert config["zero_optimization"] == {
        "stage": 3,
        "offload_optimizer": {"device": "cpu", "pin_memory": True},
        "offload_param": {"device": "cpu", "pin_memory": True},
    }


@pytest.mark.parametrize("stage", [2, 3])
def test_ds_config_bf16_accumulates_gradients_in_fp32(stage):
    """DeepSpeed's default accumulation dtype is the model's: bf16 sums of micro-batch gradients."""
    loop = LoopConfig(global_batch_size=32, micro_batch_size=4, precision="bf16")
    config = ds_config(loop, ParallelConfig(strategy=f"zero{stage}"), stage=stage, world_size=2, on_cuda=True)
    assert config["data_types"] == {"grad_accum_dtype": "fp32"}


def test_ds_config_fp32_without_offload():
    config = ds_config(LoopConfig(), ParallelConfig(strategy="zero1"), stage=1, world_size=2, on_cuda=False)
    assert config["bf16"] == {"enabled": False} and "communication_data_type" not in config
    assert "data_types" not in config  # fp32 weights: gradients accumulate in fp32 already
    assert config["zero_optimization"] == {"stage": 1}


def test_ds_config_rejects_a_batch_the_ranks_cannot_split():
    with pytest.raises(ConfigError, match="train.global_batch_size: 16 is not a multiple of"):
        ds_config(
            LoopConfig(global_batch_size=16, micro_batch_size=8),
            ParallelConfig(strategy="zero2"),
            stage=2,
            world_size=4,
            on_cuda=False,
        )


@pytest.mark.parametrize("strategy", parallel_config.STRATEGIES)
def test_strategy_classes_declare_their_row_of_the_traits_table(strategy):
    """The torch-free table the config checks read and the class attributes the strategies declare agree."""
    cls, traits = STRATEGIES[strategy], parallel_config.STRATEGY_TRAITS[strategy]
    assert cls.checkpoint_format == traits.checkpoint_format
    assert cls.supports_async_save == traits.async_save
    assert cls.needs_process_group == traits.needs_process_group
    assert cls.supports_compile == traits.compile
