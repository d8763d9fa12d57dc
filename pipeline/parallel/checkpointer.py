"""The interface of a strategy's checkpoint files: each ``ParallelModel`` holds one ``Checkpointer``.

TorchTitan keeps its checkpointer a component the trainer composes rather than methods of the model;
so here: the training step is the ``ParallelModel``'s, the files are its ``checkpointer``'s. Two
implementations, one per native format (``ParallelModel.checkpoint_format``):

- ``dcp.DCPCheckpointer`` (ddp, fsdp): torch.distributed.checkpoint, model + optimizer + schedule under
  the plain model's keys; it can also write in the background (``AsyncSaveCheckpointer``).
- ``zero_checkpoint.DeepSpeedCheckpointer`` (zero1-3): DeepSpeed's own files plus a DCP copy of the weights.

The step directory around the files (meta.json, config, tokenizer, ``latest``) is the training job's
(``pipeline.train.checkpoint``), the same for every strategy.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from concurrent.futures import Future
from pathlib import Path

from torch.distributed import ProcessGroup


class Checkpointer(ABC):
    """Writes and reads one strategy's state (weights, optimizer, schedule) in its native format."""

    @abstractmethod
    def save(self, directory: str | Path) -> None:
        """Every rank writes its part of the state into ``directory`` (collective)."""

    @abstractmethod
    def load(self, directory: str | Path, *, model_only: bool = False) -> None:
        """Restore what ``save`` wrote; ``model_only``: the weights alone, from a checkpoint of any
        strategy (continued pretraining, fine-tuning), LoRA adapters of this model keeping their init."""


class AsyncSaveCheckpointer(Checkpointer):
    """A checkpointer that can also write in the background (``checkpoint.async_save``)."""

    @abstractmethod
    def save_async(self, directory: str | Path, *, process_group: ProcessGroup | None) -> Future:
        """``save`` in the background: this rank's state is copied to host memory before this returns
        (training may change the weights right after), and a thread writes it. ``process_group`` (a group
        of its own) carries the write's collectives. The future completes when the files are on disk."""

    @abstractmethod
    def close(self) -> None:
        """Free what background saves keep between them (host staging buffers), once the last write is
        complete; a later ``save_async`` allocates them again."""
