"""Checkpoints in torch.distributed.checkpoint (DCP) format: one file per rank plus ``.metadata``.

The keys are the plain model's, so any world size, or one process, can load them (DCP reshards).
ddp and fsdp save all their state this way (``DCPCheckpointer``); every strategy's checkpoint holds
the weights this way (ZeRO's adds a consolidated DCP copy), so ``load_model_weights`` reads any of
them. LoRA checkpoints hold weights and adapters apart; the readers here merge them.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed import ProcessGroup
from torch.distributed.checkpoint.staging import DefaultStager, StagingOptions
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

from pipeline.core.errors import ResumeError
from pipeline.model.lora import apply_lora, is_adapter, merged_state_dict, saved_adapters
from pipeline.model.transformer import Transformer, empty_model
from pipeline.parallel.checkpointer import AsyncSaveCheckpointer


class DCPCheckpointer(AsyncSaveCheckpointer):
    """Model, optimizer and schedule state as DCP, synchronously or in the background.

    Background saves copy the state into host buffers of one ``DefaultStager`` made at the first and
    refilled by every later one, pinned when CUDA is there (issue 20: DCP's default stager allocated
    pageable memory per save and copied at ~1 GB/s, against ~51 GB/s into pinned memory on an H200). The
    buffers, a host copy of this rank's state, stay allocated between saves until ``close``."""

    def __init__(
        self,
        model: Transformer,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
    ):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.stager: DefaultStager | None = None

    def state_dict(self) -> dict[str, Any]:
        model_state, optim_state = get_state_dict(self.model, self.optimizer)
        return {"model": model_state, "optim": optim_state, "scheduler": self.scheduler.state_dict()}

    def save(self, directory: str | Path) -> None:
        with quiet_without_process_group():
            dcp.save(self.state_dict(), checkpoint_id=str(directory))

    def save_async(self, directory: str | Path, *, process_group: ProcessGroup | None) -> Future:
        """The previous background write must be complete (``RunCheckpointer.save`` waits for it): this
        one refills the host buffers that write reads (class docstring)."""
        if self.stager is None:
            self.stager = reused_stager()
        return dcp.async_save(  # type: ignore[return-value]  # a concurrent Future: staging is synchronous
            self.state_dict(),
            checkpoint_id=str(directory),
            process_group=process_group,
            no_dist=not torch.distributed.is_initialized(),
            async_stager=self.stager,
        )

    def close(self) -> None:
        if self.stager is not None:
            self.stager.close()
            self.stager = None

    def load(self, directory: str | Path, *, model_only: bool = False) -> None:
        if model_only:
            load_weights_into(self.model, directory)
            return
        state = self.state_dict()
        with quiet_without_process_group():
            dcp.load(state, checkpoint_id=str(directory))
        set_state_dict(
            self.model, self.optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"]
        )
        self.scheduler.load_state_dict(state["scheduler"])


def reused_stager() -> DefaultStager:
    """A stager that copies the state to host memory before ``async_save`` returns (training may change it
    right after) into buffers it keeps for the next save. With CUDA they are pinned and filled by
    non-blocking copies with one synchronize at the end; on the CPU pinning is unavailable and pointless
    (the copy is host to host), so the buffers are plain ones. No shared memory: the write is a thread of
    this process, not another process."""
    cuda = torch.cuda.is_available()
    return DefaultStager(
        StagingOptions(
            use_pinned_memory=cuda,
            use_shared_memory=False,
            use_async_staging=False,
            use_non_blocking_copy=cuda,
        )
    )


def load_weights_into(model: Transformer, directory: str | Path) -> None:
    """The model weights of any checkpoint into a (possibly sharded) model; adapters of this model
    (``lora``) keep their init. A plain checkpoint is read shard by shard (DCP reshards); a LoRA one is
    merged first (``load_model_weights``), so every rank reads it whole."""
    weights: Any  # a (sharded) state dict, or full weights by name
    if saved_adapters(directory) is None:
        weights = {key: value for key, value in get_model_state_dict(model).items() if not is_adapter(key)}
        with quiet_without_process_group():
            dcp.load({"model": weights}, checkpoint_id=str(directory))
        options = StateDictOptions(strict=False)
    else:
        weights = read_model_weights(model, directory)
        options = StateDictOptions(full_state_dict=True, strict=False)
    missing = [
        key
        for key in set_model_state_dict(model, weights, options=options).missing_keys
        if not is_adapter(key)
    ]
    if missing:
        raise ResumeError(f"{directory} lacks weights of this model: {', '.join(missing[:5])}")


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
    """The full weights of a DCP checkpoint on the CPU, by
    parameter name, for a model shaped like ``model``."""
    plain = empty_model(model.args, device="cpu")
    load_model_weights(plain, directory)
    return dict(plain.named_parameters())


@contextlib.contextmanager
def quiet_without_process_group() -> Iterator[None]:
    """DCP warns that it 'assumes a single process' when
    there is no group (or ``no_dist``); that is our intent."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield
