"""The interface every parallel strategy implements, and what they share: initial weights and set-up.

Kept apart from ``registry.py`` so that the strategy modules (``ddp``, ``fsdp``, ``zero``) can
subclass ``ParallelModel`` without an import cycle. Checkpoint files are not the model's business:
each strategy holds a ``Checkpointer`` (``checkpointer.py``) for its native format.

Initial weights are ``parallel.init``'s: every parameter drawn from a generator seeded by the run's
seed and its name, so ddp and zero1-2 (which place a whole model), zero3 (built partitioned under
``deepspeed.zero.Init``, ``zero.ZeRO3Model.place``) and fsdp (which draws each rank's
shards after ``fully_shard``) start from the same weights on any world size, layout and device.
"""

from __future__ import annotations

import contextlib
import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import torch
from torch.distributed.tensor import DTensor

from pipeline.config.parallel import ParallelConfig
from pipeline.config.train import LoopConfig
from pipeline.core.errors import ConfigError
from pipeline.model.transformer import Transformer, checkpoint_blocks
from pipeline.parallel.checkpointer import Checkpointer
from pipeline.parallel.dist import DistInfo


class ParallelModel(ABC):
    """A model, its optimizer and LR schedule, trained by one strategy over ``dist.world_size`` ranks.

    A strategy declares what it supports as class attributes, the same values as its row of the
    torch-free ``config.parallel.STRATEGY_TRAITS`` (a unit test holds them equal)."""

    strategy: ClassVar[str]
    checkpoint_format: ClassVar[str]
    """``dcp`` or ``deepspeed``: a checkpoint resumes only under a strategy of its format."""
    supports_async_save: ClassVar[bool]
    """Its ``checkpointer`` is an ``AsyncSaveCheckpointer`` (``checkpoint.async_save``)."""
    needs_process_group: ClassVar[bool]
    """It runs over a process group, one of a single rank in one process (``dist.init_distributed``)."""
    supports_compile: ClassVar[bool] = True
    """``train.compile`` is honoured (``StrategyTraits.compile`` says why ZeRO-3's is not)."""
    model: Transformer
    """The model itself (unwrapped): for evaluation and inference. Its parameter count is ``n_params``'s,
    not ``model.num_params()``: ZeRO-3 leaves each rank's parameters empty outside a gather."""
    n_params: int
    """N of the scaling laws (non-embedding), counted on the whole model before any wrapping or sharding."""
    n_params_total: int
    """Every parameter, counted with ``n_params``."""
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    checkpointer: Checkpointer
    """Writes and reads this strategy's checkpoint files."""

    def __init__(
        self,
        model: Transformer,
        *,
        dist: DistInfo,
        loop: LoopConfig,
        total_steps: int,
        options: ParallelConfig,
    ):
        """Every strategy is built alike (``registry.parallelize``): from the meta-built ``model``, the ranks,
        the loop config, the planned steps (the schedule's length) and its options. Here: what all share."""
        if self.needs_process_group:
            require_process_group(self.strategy)
        if loop.compile and not self.supports_compile:
            raise ConfigError(f"train.compile is not for {self.strategy} (StrategyTraits.compile says why)")
        self.dist = dist
        self.options = options
        # Counted before the subclass wraps or shards the model: meta tensors have their whole shapes,
        # whereas a ZeRO-3 parameter's numel() is 0 once DeepSpeed partitions it (issue 20).
        self.n_params = model.num_params()
        self.n_params_total = model.num_params(non_embedding=False)
        self.grad_clip = loop.grad_clip
        self.autocast_dtype = torch.bfloat16 if loop.precision == "bf16" else None

    @abstractmethod
    def __call__(
        self,
        tokens: torch.Tensor,
        targets: torch.Tensor,
        *,
        reduction: str = "mean",
        doc_starts: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training forward: (logits, loss); ``doc_starts`` (a (B, T) bool tensor, ``model.document_mask``)
        keeps attention within documents."""

    @abstractmethod
    def accumulate(self, *, sync: bool) -> contextlib.AbstractContextManager:
        """Context for one micro-step's forward and backward; ``sync=False`` defers gradient sync."""

    @torch.no_grad()
    def eval_loss(self, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Summed loss over ``targets``, no gradients (every
        rank must call it equally often: FSDP gathers)."""
        with self.autocast():
            return self.model(tokens, targets, reduction="sum")[1]

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def skip_step(self) -> None:
        """Drop this step's gradients: no update of weights, optimizer state or schedule (a non-finite
        loss or gradient norm; ``train.loop.train_step``)."""
        self.optimizer.zero_grad(set_to_none=True)

    @property
    def dp_size(self) -> int:
        """Data-parallel replicas: the ranks that read different batches (a tensor-parallel group reads
        one), so tokens per step are micro-batch tokens x accumulation x ``dp_size``."""
        return self.options.dp_size(self.dist.world_size)

    @property
    def lr(self) -> float:
        """The learning rate the next ``step()`` applies."""
        return self.optimizer.param_groups[0]["lr"]

    def grad_norm(self) -> torch.Tensor | None:
        """This step's pre-clip gradient norm over all ranks, left on the device unread: the loop reads it
        with the loss in the step's one host sync (``train.loop.step_stats``). None for a strategy that
        measures it only inside its own ``step`` (ZeRO)."""
        norm = torch.nn.utils.get_total_norm([p.grad for p in self.model.parameters() if p.grad is not None])
        if isinstance(norm, DTensor):  # FSDP2: each rank holds the norm of its shards only
            norm = norm.full_tensor()
        return norm

    def update(self, grad_norm: torch.Tensor) -> None:
        """Clip by ``grad_norm`` (this step's ``grad_norm()``, read as finite by the caller), update, advance
        the schedule, clear gradients: no host sync."""
        if self.grad_clip > 0:
            params = [p for p in self.model.parameters() if p.grad is not None]
            torch.nn.utils.clip_grads_with_norm_(params, self.grad_clip, grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def step(self) -> float:
        """Clip, update, advance the schedule, clear gradients; returns the pre-clip gradient norm (read on
        the host here; the loop reads it with the loss instead and calls ``update``). A non-finite norm
        updates nothing (``skip_step``): clipping by it would write NaN into every weight."""
        grad_norm = self.grad_norm()
        assert grad_norm is not None, f"{self.strategy} steps by its own step()"
        norm = float(grad_norm)
        if math.isfinite(norm):
            self.update(grad_norm)
        else:
            self.skip_step()
        return norm

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.dist.device.type, dtype=self.autocast_dtype)

    # Checkpoints: the strategy's checkpointer writes and reads its native format (``checkpointer.py``).

    def save(self, directory: str | Path) -> None:
        """Every rank writes its part of model, optimizer and schedule state into ``directory``."""
        self.checkpointer.save(directory)

    def load(self, directory: str | Path, *, model_only: bool = False) -> None:
        """Restore what ``save`` wrote; ``model_only`` takes
        just the weights (fine-tuning from a checkpoint)."""
        self.checkpointer.load(directory, model_only=model_only)


def require_process_group(strategy: str) -> None:
    """The sharding strategies run over a process group, one of a single rank in one process."""
    if not torch.distributed.is_initialized():
        raise ConfigError(
            f"parallel.strategy {strategy} needs a process group: launch with torchrun, or call "
            f"init_distributed(strategy={strategy!r}), which makes one of one rank for one process"
        )


def prepare_blocks(model: Transformer, loop: LoopConfig) -> Transformer:
    """The per-block options, applied to the plain model before a strategy wraps or shards it (TorchTitan's
    order: activation checkpointing, then compile, then wrapping), so parameter names stay the plain model's.
    ``Module.compile`` compiles each block in place; the model around it (embeddings, head) stays eager."""
    if loop.activation_checkpointing:
        checkpoint_blocks(model)
    if loop.compile:
        for block in model.layers:
            block.compile()
    return model
