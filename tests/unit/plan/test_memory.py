"""The memory estimate's arithmetic (``plan.memory``) and the fit advice (``plan.fit``); the bytes of real
sharded tensors are checked in tests/distributed/test_plan_memory.py."""

from __future__ import annotations

import dataclasses

import pytest

from pipeline.config.model import ModelConfig
from pipeline.model.ladder import SIZES
from pipeline.model.loss import LOSS_CHUNK_ROWS
from pipeline.model.transformer import build_model
from pipeline.plan.fit import Plan, fit_warning, suggestions
from pipeline.plan.memory import (
    STRATEGIES,
    GiB,
    Layout,
    Workload,
    activation_bytes,
    block_params,
    estimate,
    head_bytes,
    parameter_count,
    root_params,
)


def workload(size: str, *, micro: int = 1, checkpointing: bool = True, seq_len: int = 2048) -> Workload:
    args = ModelConfig(size=size, seq_len=seq_len).args(vocab_size=32000)
    return Workload(
        args=args, micro_batch_size=micro, precision="bf16", activation_checkpointing=checkpointing
    )


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("size", ["tiny", "14m", "1.3b", "70b"])
def test_parameter_counts_match_the_model(size, tie):
    args = dataclasses.replace(ModelConfig(size=size, seq_len=64).args(vocab_size=1000), tie_embeddings=tie)
    model = build_model(args)  # meta: no memory
    assert parameter_count(args) == model.num_params(non_embedding=False)
    assert block_params(args) == sum(p.numel() for p in model.layers[0].parameters())
    assert root_params(args) + args.n_layers * block_params(args) == parameter_count(args)


def test_sharded_state_shrinks_with_ranks_replicated_state_does_not():
    work = workload("1.3b")
    one, eight = Layout(gpus_per_node=1), Layout(gpus_per_node=8)
    p = parameter_count(work.args)
    ddp = estimate("ddp", work, eight)
    assert (ddp.params, ddp.grads, ddp.optimizer) == (4 * p, 4 * p, 8 * p)
    fsdp1, fsdp8 = estimate("fsdp", work, one), estimate("fsdp", work, eight)
    assert fsdp8.params == pytest.approx(fsdp1.params / 8)
    assert fsdp8.optimizer == pytest.approx(fsdp1.optimizer / 8)
    zero1, zero2, zero3 = (estimate(s, work, eight) for s in ("zero1", "zero2", "zero3"))
    assert zero1.params == zero2.params == 2 * p and zero3.params == pytest.approx(2 * p / 8)  # bf16 weights
    # ZeRO-1 keeps bf16 gradients whole; ZeRO-2/3 sum them in fp32 partitions (grad_accum_dtype)
    assert zero1.grads == 2 * p and zero2.grads == zero3.grads == pytest.approx(4 * p / 8)
    assert zero1.optimizer == pytest.approx(12 * p / 8)  # two fp32 moments + the fp32 master, sharded


def test_hsdp_shards_within_a_replica():
    work = workload("7b")
    fsdp = estimate("fsdp", work, Layout(nodes=4, gpus_per_node=8))
    hsdp = estimate("fsdp", work, Layout(nodes=4, gpus_per_node=8, dp_replicate=4))
    assert hsdp.params == pytest.approx(4 * fsdp.params)


def test_activations_follow_the_per_layer_count():
    work = workload("1.3b", micro=2, checkpointing=False)
    h, f, layers, tokens = 2048, work.args.ffn_hidden, 24, 2 * 2048
    per_layer = tokens * (6 * h + 2 * h + 4 * f) * 2  # bf16; MHA: kv = h
    assert activation_bytes(work, 1, checkpointing=False) == layers * per_layer
    assert activation_bytes(work, 1, checkpointing=True) == layers * tokens * h * 2 + per_layer
    assert activation_bytes(work, 4, checkpointing=False) == layers * per_layer / 4  # sequence parallel


def test_the_fused_head_holds_one_chunk_of_tokens_however_long_the_micro_batch():
    """The head and loss run LOSS_CHUNK_ROWS tokens at a time: 20 GiB of logits at 16k tokens and a 128k
    vocabulary in one piece, one chunk's worth (plus the fp32 weight-gradient sum) chunked."""
    short, long = workload("1.3b", micro=2), workload("1.3b", micro=8)  # 4,096 and 16,384 tokens
    assert head_bytes(long, 1) == head_bytes(short, 1)
    vocab, d = long.args.vocab_size, long.args.d_model
    assert head_bytes(long, 1) == LOSS_CHUNK_ROWS * vocab * (2 + 4 + 2) + vocab * d * 4  # bf16
    assert head_bytes(long, 2) == head_bytes(long, 1) / 2


def test_tensor_parallel_divides_the_model():
    work = workload("70b")
    tp1 = estimate("fsdp", work, Layout(nodes=8, gpus_per_node=8))
    tp8 = estimate("fsdp", work, Layout(nodes=8, gpus_per_node=8, tp=8))
    assert tp8.params == pytest.approx(tp1.params)  # 64 ways either way
    assert tp8.activations < tp1.activations / 7 and tp8.working < tp1.working / 7


def test_70b_fits_8_nodes_with_tp_8_and_not_one_node():
    fits = Plan(workload("70b", micro=4), Layout(nodes=8, gpus_per_node=8, tp=8), "fsdp", 80 * GiB)
    assert fits.fits(fits.estimate()) and not suggestions(fits) and not fit_warning(fits)
    one_node = dataclasses.replace(fits, layout=Layout(nodes=1, gpus_per_node=8, tp=8))
    assert not one_node.fits(one_node.estimate())
    advice = suggestions(one_node)
    assert any("nodes of 8 GPUs" in line for line in advice)
    assert "lmpipe plan memory" in fit_warning(one_node)


def test_suggestions_name_what_fits():
    plan = Plan(workload("7b", micro=8, checkpointing=False), Layout(gpus_per_node=8), "fsdp", 80 * GiB)
    assert not plan.fits(plan.estimate())
    advice = suggestions(plan)
    assert "train.activation_checkpointing=true" in advice
    assert any(line.startswith("train.micro_batch_size=") for line in advice)
    assert suggestions(dataclasses.replace(plan, device_bytes=None)) == []  # unknown device: no advice


def test_every_strategy_and_rung_estimates():
    for size in SIZES:
        for strategy in STRATEGIES:
            assert estimate(strategy, workload(size), Layout(nodes=2, gpus_per_node=8)).total > 0
    with pytest.raises(ValueError, match="unknown strategy"):
        estimate("pp", workload("tiny"), Layout())
    assert Layout(gpus_per_node=8, tp=3).problems() and not Layout(gpus_per_node=8, tp=8).problems()
