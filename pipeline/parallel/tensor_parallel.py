"""Tensor parallelism (Megatron-style, with sequence parallelism) as DTensor plans, TorchTitan's layout.

Within a block: q/k/v and SwiGLU's w1/w3 column-wise (each rank computes its own heads, query and
key/value alike so GQA's grouping holds per rank, and its own hidden units), wo and w2 row-wise (their
partial sums reduce-scattered over the sequence). Between the matmuls the residual stream stays sharded
over the sequence (``SequenceParallel`` norms: activations and norm work split tp ways), gathered only as
a block's attention or feed-forward input. The embedding is split by vocabulary rows, its output
reduce-scattered onto the sequence; the output head is split by vocabulary rows too (the same tensor when
tied), and ``loss.py`` computes the fused loss vocabulary-parallel: no rank ever holds logits of the whole
vocabulary. The model itself is unchanged: attention infers its local head count from its shards.

``parallel.tp`` groups are the mesh's innermost dimension (``mesh.py``); ddp and fsdp wrap the result.
"""

from __future__ import annotations

from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import Replicate, Shard, distribute_tensor
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    ParallelStyle,
    PrepareModuleInput,
    RowwiseParallel,
    SequenceParallel,
    parallelize_module,
)

from pipeline.model.transformer import Transformer

ATTENTION_INPUTS = 5
"""``Attention.forward``'s positional inputs (x, cos, sin, mask, cache): only x is laid out."""


def block_plan() -> dict[str, ParallelStyle]:
    """One block: norms on sequence shards, inputs gathered for the column-wise matmuls, outputs of the
    row-wise ones reduce-scattered back onto sequence shards (local tensors: the residual add needs none)."""
    rest = (None,) * (ATTENTION_INPUTS - 1)
    return {
        "attention_norm": SequenceParallel(),
        "attention": PrepareModuleInput(
            input_layouts=(Shard(1), *rest), desired_input_layouts=(Replicate(), *rest)
        ),
        "attention.wq": ColwiseParallel(),
        "attention.wk": ColwiseParallel(),
        "attention.wv": ColwiseParallel(),
        "attention.wo": RowwiseParallel(output_layouts=Shard(1)),
        "ffn_norm": SequenceParallel(),
        "feed_forward": PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),)),
        "feed_forward.w1": ColwiseParallel(),
        "feed_forward.w3": ColwiseParallel(),
        "feed_forward.w2": RowwiseParallel(output_layouts=Shard(1)),
    }


def apply_tensor_parallel(model: Transformer, tp_mesh: DeviceMesh) -> Transformer:
    """Split ``model``'s weights over ``tp_mesh`` in place (module docstring); returns it.

    Call it on the initialised full model on every rank (the same weights everywhere: each keeps its
    shard), before activation checkpointing, compile and FSDP (TorchTitan's order)."""
    parallelize_module(
        model,
        tp_mesh,
        {
            "tok_embeddings": RowwiseParallel(input_layouts=Replicate(), output_layouts=Shard(1)),
            "norm": SequenceParallel(),  # its sequence shards go to the head, which gathers them
        },
    )
    for block in model.layers:
        parallelize_module(block, tp_mesh, block_plan())
    if model.args.tie_embeddings:
        model.tie_weights()  # the embedding's row shards are the head's: one tensor again
    else:
        shard_vocab_rows(model.output, tp_mesh)
    return model


def shard_vocab_rows(head: nn.Linear, tp_mesh: DeviceMesh) -> None:
    """The output head's weight (vocab, d) split by rows; ``loss.OutputHead`` sees a DTensor weight and
    computes logits and loss vocabulary-parallel, so the head needs no input or output hooks."""
    head.register_parameter("weight", nn.Parameter(distribute_tensor(head.weight, tp_mesh, [Shard(0)])))
