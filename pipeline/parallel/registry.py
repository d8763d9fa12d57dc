"""Spread a model over ranks by one strategy, behind the one interface the training loop calls.

The loop sees a ``ParallelModel`` (``base``): call it for the loss, ``backward``
inside ``accumulate(sync=...)``, ``step()`` once per optimizer step, its ``checkpointer``
(``checkpointer.py``) for checkpoint files. It never asks which strategy is underneath; what a
strategy supports (background saves, its checkpoint format, a process group) are class attributes,
mirrored by the torch-free ``config.parallel.STRATEGY_TRAITS`` (a unit test holds them equal). A
new strategy is one module here plus one line in ``STRATEGIES`` (and its row of the traits table).

A strategy owns what differs between them: where the weights live (replicated, FSDP2 shards, ZeRO
partitions), mixed precision (autocast; a policy for FSDP2; the engine's config for DeepSpeed),
gradient sync, the optimizer and schedule (DeepSpeed's engine steps both), and the checkpoint format.

Gradient contract: the loss handed to ``backward`` is this rank's share of the global
mean, scaled so that averaging gradients over ranks gives the global-batch gradient
(``loop.train_step`` does that scaling); every strategy averages over ranks. With tensor parallelism
(``parallel.tp``) the ranks of a group hold the same batch and loss: the target count and the loss
summed over all ranks are both tp times the replicas' sums, so the same scaling holds, and the strategy
averages over the data-parallel replicas (``ParallelModel.dp_size``).
"""

from __future__ import annotations

from pipeline.config.parallel import ParallelConfig
from pipeline.config.train import LoopConfig
from pipeline.core.config import require, require_choice
from pipeline.model.lora import adapter_config
from pipeline.model.transformer import Transformer
from pipeline.parallel.base import ParallelModel
from pipeline.parallel.ddp import DDPModel
from pipeline.parallel.dist import DistInfo
from pipeline.parallel.fsdp import FSDPModel
from pipeline.parallel.zero import ZeRO1Model, ZeRO2Model, ZeRO3Model

__all__ = ["STRATEGIES", "parallelize"]

STRATEGIES: dict[str, type[ParallelModel]] = {
    cls.strategy: cls
    for cls in (
        DDPModel,
        FSDPModel,
        ZeRO1Model,
        ZeRO2Model,
        ZeRO3Model,
    )
}


def parallelize(
    model: Transformer, *, strategy: str | ParallelConfig, dist: DistInfo, loop: LoopConfig, total_steps: int
) -> ParallelModel:
    """Place, initialise and wrap a model built on the meta device (``model.build_model``).

    ``strategy`` is a name (the strategy's default options) or the job's whole ``parallel`` config.
    Call ``torch.manual_seed`` first, with the same seed on every rank: it fixes the initial weights.
    """
    options = strategy if isinstance(strategy, ParallelConfig) else ParallelConfig(strategy=strategy)
    require_choice(options.strategy, "parallel.strategy", STRATEGIES)
    options.check("parallel.")
    # A layout the ranks or the model's shape do not fit, or a batch the replicas cannot split, fails here,
    # before any set-up.
    options.check_layout(world_size=dist.world_size, model=model.args)
    require(
        options.tp == 1 or adapter_config(model) is None,
        "parallel.tp",
        "LoRA adapters are not split by tensor parallelism; fine-tune with tp 1",
    )
    require(
        options.tp == 1 or not loop.eval_tasks,
        "parallel.tp",
        "train.eval_tasks score sequences of any length, which sequence parallelism cannot split; "
        "score the checkpoints with lmpipe eval instead",
    )
    loop.grad_accum_steps(options.dp_size(dist.world_size))
    return STRATEGIES[options.strategy](model, dist=dist, loop=loop, total_steps=total_steps, options=options)
