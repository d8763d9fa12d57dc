"""The interface every parallel strategy implements, and what they share: initial weights and DCP checkpoints.

Kept apart from ``parallel.py`` (the registry) so that the strategy modules
(``parallel_fsdp``, ``parallel_deepspeed``) can subclass ``ParallelModel`` without an
import cycle.

Initial weights: every strategy materialises the whole model on the CPU and runs
``init_weights()`` there, from the global RNG that the caller seeded, before placing,
wrapping or sharding it. So the same seed gives the same starting weights under ddp,
fsdp and zero1-3, on any world size and device (a GPU's generator draws other numbers
than the CPU's, and a sharded init would draw per shard). The price is one full fp32
copy of the model in host memory per rank for the moment of set-up, which is fine for
every size of the ladder.
"""

from __future__ import annotations

import contextlib
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed import ProcessGroup
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)
from torch.distributed.tensor import DTensor

from pipeline.config.parallel import ParallelConfig
from pipeline.config.train import LoopConfig
from pipeline.model.lora import apply_lora, is_adapter, merged_state_dict, reset_adapters, saved_adapters
from pipeline.model.transformer import Transformer, checkpoint_blocks, empty_model
from pipeline.parallel.dist import DistInfo


class ParallelModel(ABC):
    """A model, its optimizer and LR schedule, trained by one strategy over ``dist.world_size`` ranks."""

    strategy: ClassVar[str]
    model: Transformer
    """The model itself (unwrapped): for parameter counts, evaluation and inference."""
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler

    def __init__(self, *, dist: DistInfo, loop: LoopConfig, options: ParallelConfig):
        self.dist = dist
        self.options = options
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
        """Summed loss over ``targets``, no gradients (every rank must call it equally often: FSDP gathers)."""
        with self.autocast():
            return self.model(tokens, targets, reduction="sum")[1]

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def skip_step(self) -> None:
        """Drop this step's gradients: no update of weights, optimizer state or schedule (a non-finite
        loss or gradient norm; ``train.train_step``)."""
        self.optimizer.zero_grad(set_to_none=True)

    @property
    def lr(self) -> float:
        """The learning rate the next ``step()`` applies."""
        return self.optimizer.param_groups[0]["lr"]

    def step(self) -> float:
        """Clip, update, advance the schedule, clear gradients; returns the pre-clip gradient norm.
        A non-finite norm updates nothing (``skip_step``): clipping by it would write NaN into every weight."""
        params = [p for p in self.model.parameters() if p.grad is not None]
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        if isinstance(grad_norm, DTensor):  # FSDP2: each rank holds the norm of its shards only
            grad_norm = grad_norm.full_tensor()
        if not torch.isfinite(grad_norm):
            self.skip_step()
            return float(grad_norm)
        if self.grad_clip > 0:
            torch.nn.utils.clip_grads_with_norm_(params, self.grad_clip, grad_norm)
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
        with quiet_without_process_group():
            dcp.save(self.state_dict(), checkpoint_id=str(directory))

    def save_async(self, directory: str | Path, *, process_group: ProcessGroup | None) -> Future:
        """``save`` in the background: this rank's state is copied to host memory before this returns
        (training may change the weights right after), and a thread writes it. ``process_group`` (a
        group of its own, ``checkpoint.AsyncCheckpointer``) carries the write's collectives, so they
        never interleave with training's. The future completes when the files are on disk."""
        return dcp.async_save(
            self.state_dict(),
            checkpoint_id=str(directory),
            process_group=process_group,
            no_dist=not torch.distributed.is_initialized(),
        )

    def load(self, directory: str | Path, *, model_only: bool = False) -> None:
        """Restore what ``save`` wrote; ``model_only`` takes just the weights (fine-tuning from a checkpoint)."""
        if model_only:
            self._load_weights(directory)
            return
        state = self.state_dict()
        with quiet_without_process_group():
            dcp.load(state, checkpoint_id=str(directory))
        set_state_dict(
            self.model, self.optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"]
        )
        self.scheduler.load_state_dict(state["scheduler"])

    def _load_weights(self, directory: str | Path) -> None:
        """The model weights of any checkpoint into this model; adapters of this model (``lora``) keep their
        init. A plain checkpoint is read shard by shard (DCP reshards); a LoRA one is merged first
        (``load_model_weights``), so every rank reads it whole."""
        if saved_adapters(directory) is None:
            weights = {
                key: value for key, value in get_model_state_dict(self.model).items() if not is_adapter(key)
            }
            with quiet_without_process_group():
                dcp.load({"model": weights}, checkpoint_id=str(directory))
            options = StateDictOptions(strict=False)
        else:
            weights = read_model_weights(self.model, directory)
            options = StateDictOptions(full_state_dict=True, strict=False)
        missing = [
            key
            for key in set_model_state_dict(self.model, weights, options=options).missing_keys
            if not is_adapter(key)
        ]
        if missing:
            raise ValueError(f"{directory} lacks weights of this model: {', '.join(missing[:5])}")


def require_process_group(strategy: str) -> None:
    """The sharding strategies run over a process group, one of a single rank in one process."""
    if not torch.distributed.is_initialized():
        raise ValueError(
            f"parallel.strategy {strategy} needs a process group: launch with torchrun, or call "
            f"init_distributed(strategy={strategy!r}), which makes one of one rank for one process"
        )


def init_on_cpu(model: Transformer) -> Transformer:
    """Materialise a meta-built model on the CPU and draw its initial weights (see the module docstring),
    then its LoRA adapters' if it has any (``lora.reset_adapters``)."""
    model.to_empty(device="cpu")
    model.init_weights()
    reset_adapters(model)
    return model


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


def load_model_weights(model: Transformer, directory: str | Path) -> None:
    """Weights from a DCP checkpoint into a plain model in this process (no process group needed).

    Every strategy's checkpoint has them: ZeRO's ``save`` adds a consolidated DCP copy of the weights.
    A LoRA fine-tune's checkpoint (its meta names the adapters) is read into a model with those
    adapters and merged (``lora.merged_state_dict``): every reader of weights gets plain ones.
    """
    adapters = saved_adapters(directory)
    source = (
        model
        if adapters is None
        else apply_lora(empty_model(model.args, device=model.tok_embeddings.weight.device), adapters)
    )
    state = {"model": source.state_dict()}
    with quiet_without_process_group():
        dcp.load(state, checkpoint_id=str(directory), no_dist=True)
    source.load_state_dict(state["model"])
    if source is not model:
        model.load_state_dict(merged_state_dict(source))


def read_model_weights(model: Transformer, directory: str | Path) -> dict[str, torch.Tensor]:
    """The full weights of a DCP checkpoint on the CPU, by parameter name, for a model shaped like ``model``."""
    plain = empty_model(model.args, device="cpu")
    load_model_weights(plain, directory)
    return dict(plain.named_parameters())


@contextlib.contextmanager
def quiet_without_process_group() -> Iterator[None]:
    """DCP warns that it 'assumes a single process' when there is no group (or ``no_dist``); that is our intent."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield
