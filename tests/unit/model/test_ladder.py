"""The size ladder: names match parameter counts, shapes are valid Llamas."""

import pytest

from pipeline.config.train import TrainJobConfig
from pipeline.model.args import ModelArgs
from pipeline.model.ladder import (
    NOMINAL_PARAMS,
    SIZES,
    default_batch_size,
    default_batch_tokens,
    default_lr,
    ffn_hidden_size,
)


@pytest.mark.parametrize("name", list(SIZES))
def test_each_rung_is_near_its_nominal_size(name):
    ratio = SIZES[name].non_embedding_params() / NOMINAL_PARAMS[name]
    assert 0.75 <= ratio <= 1.25, f"{name}: N is {ratio:.2f}x its name"


def test_rungs_grow_and_heads_divide():
    params = [shape.non_embedding_params() for shape in SIZES.values()]
    assert params == sorted(params)
    for shape in SIZES.values():
        assert shape.d_model % shape.n_heads == 0 and shape.n_heads % shape.n_kv_heads == 0


def test_default_lr_and_batch_follow_the_olmo_ladder_rule():
    assert default_lr(108_000_000) == pytest.approx(0.0047)
    assert default_lr(8 * 108_000_000) == pytest.approx(0.0047 / 2)  # N^(-1/3)
    assert default_lr(1_000_000) == default_lr(10_000_000)  # held below the fitted range
    assert default_batch_tokens(108_000_000) == 160 * 2048
    assert default_batch_tokens(8 * 108_000_000) == 4 * 160 * 2048  # N^(2/3)
    for n in (1_000_000, 30_000_000, 1_300_000_000, 7_000_000_000):
        for seq_len in (64, 256, 2048):
            size = default_batch_size(n, seq_len)
            exact = max(1.0, default_batch_tokens(n) / seq_len)
            assert 0.8 <= size / exact <= 1.25
            odd = size // 2 ** (size.bit_length() - 1) if size & (size - 1) == 0 else size // (size & -size)
            assert odd in (1, 3), f"{size} is not 2^k or 3 * 2^k"


def test_train_config_takes_lr_and_batch_from_the_ladder_unless_given():
    n = SIZES["125m"].non_embedding_params()
    config = TrainJobConfig.load(None, ["data.shards=s", "model.size=125m", "model.seq_len=2048"])
    assert config.train.lr == default_lr(n) and config.train.global_batch_size == default_batch_size(n, 2048)
    assert config.flat()["train.lr"] == str(
        default_lr(n)
    )  # resolved values are what MLflow and checkpoints keep
    given = TrainJobConfig.load(
        None, ["data.shards=s", "model.size=125m", "train.lr=1e-4", "train.global_batch_size=24"]
    )
    assert (given.train.lr, given.train.global_batch_size) == (1e-4, 24)


# The published shapes the largest rungs stand for: (d_model, n_layers, n_heads, n_kv_heads, ffn_hidden).
LLAMA_SHAPES = {
    "13b": (5120, 40, 40, 40, 13824),  # Llama 2 13B
    "34b": (8192, 48, 64, 8, 22016),  # Code Llama 34B
    "70b": (8192, 80, 64, 8, 28672),  # Llama 2 70B
}


@pytest.mark.parametrize("name", list(LLAMA_SHAPES))
def test_largest_rungs_match_the_llama_they_stand_for(name):
    d_model, n_layers, n_heads, n_kv_heads, ffn_hidden = LLAMA_SHAPES[name]
    llama = ModelArgs(  # the Llama's own shape
        d_model=d_model, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads, ffn_hidden=ffn_hidden
    )
    rung = SIZES[name]
    ratio = rung.non_embedding_params() / llama.non_embedding_params()
    assert 0.98 <= ratio <= 1.02, f"{name}: N is {ratio:.3f}x the Llama's"
    assert rung.head_dim == 128 and rung.n_kv_heads == (8 if name != "13b" else rung.n_heads)
    assert rung.ffn_hidden == ffn_hidden_size(rung.d_model)  # the ladder's rule, not the Llama's own widths
    assert 32 <= rung.d_model / rung.n_layers <= 128  # the ladder's aspect ratio (Code Llama 34B is 171)
