"""Spread a model over ranks by one strategy, behind the one interface the training loop calls.

The loop sees a ``ParallelModel``: call it for the loss, ``backward`` inside
``accumulate(sync=...)``, ``step()`` once per optimizer step, ``save``/``load`` for
checkpoints. It never asks which strategy is underneath. A strategy owns what differs
between them: where the weights are materialised and initialised (DDP: before
wrapping; FSDP2: after sharding, on the meta-built model), mixed precision (autocast
here; a policy for FSDP2; the engine's config for DeepSpeed), gradient sync, the
optimizer and schedule (DeepSpeed's engine steps both), and the checkpoint format.

Gradient contract: the loss handed to ``backward`` is this rank's share of the global
mean, scaled so that averaging gradients over ranks gives the global-batch gradient
(``train.train_step`` does that scaling); every strategy averages over ranks.
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)
from torch.nn.parallel import DistributedDataParallel

from pipeline.distributed import DistInfo
from pipeline.job_config import LoopConfig
from pipeline.model import Transformer
from pipeline.optim import build_optimizer, build_scheduler


class ParallelModel(ABC):
    """A model, its optimizer and LR schedule, trained by one strategy over ``dist.world_size`` ranks."""

    strategy: ClassVar[str]
    model: Transformer
    """The model itself (unwrapped): for parameter counts, evaluation and inference."""
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler

    def __init__(self, *, dist: DistInfo, loop: LoopConfig):
        self.dist = dist
        self.grad_clip = loop.grad_clip
        self.autocast_dtype = torch.bfloat16 if loop.precision == "bf16" else None

    @abstractmethod
    def __call__(self, tokens: torch.Tensor, targets: torch.Tensor, *, reduction: str = "mean"
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training forward: (logits, loss)."""

    @abstractmethod
    def accumulate(self, *, sync: bool) -> contextlib.AbstractContextManager:
        """Context for one micro-step's forward and backward; ``sync=False`` defers gradient sync."""

    @torch.no_grad()
    def eval_loss(self, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Summed loss over ``targets``, no gradients (every rank must call it equally often: FSDP gathers)."""
        with self.autocast():
            return self.model(tokens, targets, reduction="sum")[1]

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    @property
    def lr(self) -> float:
        """The learning rate the next ``step()`` applies."""
        return self.optimizer.param_groups[0]["lr"]

    def step(self) -> float:
        """Clip, update, advance the schedule, clear gradients; returns the pre-clip gradient norm."""
        max_norm = self.grad_clip if self.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(grad_norm)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.dist.device.type, dtype=self.autocast_dtype)

    # Checkpoints: torch.distributed.checkpoint (DCP), one file per rank plus .metadata.
    # The keys are the plain model's, so any world size, or one process, can load them.

    def state_dict(self) -> dict[str, Any]:
        model_state, optim_state = get_state_dict(self.model, self.optimizer)
        return {"model": model_state, "optim": optim_state, "scheduler": self.scheduler.state_dict()}

    def save(self, directory: str | Path) -> None:
        """Every rank writes its part of model, optimizer and schedule state into ``directory``."""
        with _quiet_without_process_group():
            dcp.save(self.state_dict(), checkpoint_id=str(directory))

    def load(self, directory: str | Path, *, model_only: bool = False) -> None:
        """Restore what ``save`` wrote; ``model_only`` takes just the weights (fine-tuning from a checkpoint)."""
        if model_only:
            state = {"model": get_model_state_dict(self.model)}
            with _quiet_without_process_group():
                dcp.load(state, checkpoint_id=str(directory))
            set_model_state_dict(self.model, state["model"])
            return
        state = self.state_dict()
        with _quiet_without_process_group():
            dcp.load(state, checkpoint_id=str(directory))
        set_state_dict(self.model, self.optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
        self.scheduler.load_state_dict(state["scheduler"])


# The only buffers are the RoPE tables, equal on every rank by construction: no broadcast before each
# forward. torch 2.13 renamed the switch (the old name warns); older torch knows only the old one.
_NO_BUFFER_SYNC = ({"forward_sync_buffers": False}
                   if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                   else {"broadcast_buffers": False})


class DDPModel(ParallelModel):
    """Replicated weights, gradients all-reduced in the backward pass; one process: the plain module."""

    strategy = "ddp"

    def __init__(self, model: Transformer, *, dist: DistInfo, loop: LoopConfig, total_steps: int):
        super().__init__(dist=dist, loop=loop)
        model.to_empty(device=dist.device)
        model.init_weights()
        self.model = model
        self.module = (DistributedDataParallel(model, device_ids=[dist.device] if dist.device.type == "cuda" else None,
                                               **_NO_BUFFER_SYNC)
                       if dist.is_distributed else model)
        self.optimizer = build_optimizer(model, loop)
        self.scheduler = build_scheduler(self.optimizer, loop, total_steps=total_steps)

    def __call__(self, tokens: torch.Tensor, targets: torch.Tensor, *, reduction: str = "mean"
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        with self.autocast():
            return self.module(tokens, targets, reduction=reduction)

    def accumulate(self, *, sync: bool) -> contextlib.AbstractContextManager:
        if sync or not isinstance(self.module, DistributedDataParallel):
            return contextlib.nullcontext()
        return self.module.no_sync()


def load_model_weights(model: torch.nn.Module, directory: str | Path) -> None:
    """Weights from a DCP checkpoint into a plain model in this process (no process group needed)."""
    state = {"model": model.state_dict()}
    with _quiet_without_process_group():
        dcp.load(state, checkpoint_id=str(directory))
    model.load_state_dict(state["model"])


@contextlib.contextmanager
def _quiet_without_process_group() -> Iterator[None]:
    """DCP warns that it 'assumes a single process' when there is no group; that is our intent."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


STRATEGIES: dict[str, type[ParallelModel]] = {DDPModel.strategy: DDPModel}


def parallelize(model: Transformer, *, strategy: str, dist: DistInfo, loop: LoopConfig,
                total_steps: int) -> ParallelModel:
    """Place, initialise and wrap a model built on the meta device (``model.build_model``)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown parallel strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
    return STRATEGIES[strategy](model, dist=dist, loop=loop, total_steps=total_steps)
