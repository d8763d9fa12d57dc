"""Sharded init on real gloo ranks: a meta model laid out by FSDP2, by tensor parallelism, or by both,
materialised shard by shard (``parallel.init.materialize_and_init``), holds exactly the weights one
process draws for the whole model (``init_on_cpu``) from the same seed."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor, Replicate, Shard
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    RowwiseParallel,
    SequenceParallel,
    parallelize_module,
)

from pipeline.config.model import ModelConfig
from pipeline.model.args import ModelArgs
from pipeline.model.transformer import build_model
from pipeline.parallel.init import init_on_cpu, materialize_and_init
from pipeline.testing import run_distributed_test

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

SEED = 1234
VOCAB = {"fsdp": 101, "tp": 102, "fsdp_tp": 102}
"""FSDP2 shards 101 embedding rows unevenly (51 + 50, padded inside FSDP); tp splits the vocabulary evenly."""
BLOCK_PLAN = {
    "attention_norm": SequenceParallel(),
    "attention.wq": ColwiseParallel(),
    "attention.wk": ColwiseParallel(),
    "attention.wv": ColwiseParallel(),
    "attention.wo": RowwiseParallel(output_layouts=Shard(1)),
    "ffn_norm": SequenceParallel(),
    "feed_forward.w1": ColwiseParallel(),
    "feed_forward.w3": ColwiseParallel(),
    "feed_forward.w2": RowwiseParallel(output_layouts=Shard(1)),
}


def model_args(layout: str) -> ModelArgs:
    return ModelConfig(size="tiny", seq_len=32).args(vocab_size=VOCAB[layout])


def reference(layout: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(SEED)
    model = init_on_cpu(build_model(model_args(layout)))
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def tensor_parallel(model: torch.nn.Module, mesh) -> None:
    parallelize_module(
        model,
        mesh,
        {
            "tok_embeddings": RowwiseParallel(input_layouts=Replicate(), output_layouts=Shard(1)),
            "norm": SequenceParallel(),
        },
    )
    for block in model.layers:
        parallelize_module(block, mesh, BLOCK_PLAN)
    model.tie_weights()  # the head is the embedding's new DTensor again, before FSDP sees two tensors


def fully_shard_model(model: torch.nn.Module, mesh) -> None:
    for block in model.layers:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)


def full(param: torch.Tensor) -> torch.Tensor:
    return param.full_tensor() if isinstance(param, DTensor) else param.detach()


def sharded_init(layout: str) -> dict:
    """On one rank: the meta model laid out, then materialised; the full tensors and what this rank held.
    Under FSDP alone also the loss of a batch, which only consistent shards give."""
    world = dist.get_world_size()
    model = build_model(model_args(layout))
    if layout == "fsdp":
        fully_shard_model(model, init_device_mesh("cpu", (world,)))
    elif layout == "tp":
        tensor_parallel(model, init_device_mesh("cpu", (world,)))
    else:  # fsdp x tp: TP within pairs of ranks, FSDP across them (TorchTitan's 2-D order)
        mesh = init_device_mesh("cpu", (world // 2, 2), mesh_dim_names=("dp", "tp"))
        tensor_parallel(model, mesh["tp"])
        fully_shard_model(model, mesh["dp"])
    materialize_and_init(model, device="cpu", seed=SEED)
    params = dict(model.named_parameters())
    local = sum(p.to_local().numel() if isinstance(p, DTensor) else p.numel() for p in params.values())
    return {
        "full": {name: full(p) for name, p in params.items()},
        "local_numel": local,
        "all_dtensors": all(isinstance(p, DTensor) for p in params.values()),
        "tied": model.output.weight is model.tok_embeddings.weight,
        "loss": batch_loss(model) if layout == "fsdp" else None,
    }


def batch_loss(model: torch.nn.Module) -> float:
    tokens = torch.randint(0, 101, (2, 17), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return float(model(tokens[:, :-1], tokens[:, 1:])[1])


def each_layout(layouts: list[str]) -> dict[str, dict]:
    return {layout: sharded_init(layout) for layout in layouts}


def check_layouts(layouts: list[str], world_size: int) -> None:
    ranks = run_distributed_test(each_layout, world_size=world_size, layouts=layouts)
    for layout in layouts:
        expected = reference(layout)
        total = sum(t.numel() for t in expected.values())
        for rank, results in enumerate(ranks):
            result = results[layout]
            assert result["all_dtensors"] and result["tied"], (layout, rank)
            assert result["full"].keys() == expected.keys()
            for name, tensor in expected.items():
                assert torch.equal(result["full"][name], tensor), f"{layout} rank {rank}: {name}"
            assert result["local_numel"] < 0.6 * total  # each rank holds about its share, not the model
            if result["loss"] is not None:
                torch.manual_seed(SEED)
                assert result["loss"] == pytest.approx(
                    batch_loss(init_on_cpu(build_model(model_args(layout))))
                )


def test_fsdp_and_tensor_parallel_init_equal_whole_model_init():
    check_layouts(["fsdp", "tp"], world_size=2)


def test_fsdp_over_tensor_parallel_init_equals_whole_model_init():
    check_layouts(["fsdp_tp"], world_size=4)
