"""ZeRO checkpoints: DeepSpeed's own files, plus a DCP copy of the weights (``DeepSpeedCheckpointer``).

DeepSpeed's format: ``latest``, ``zero/`` with one model and one optimizer file per rank,
``zero_to_fp32.py``; plus, written by rank 0 from the fp32 master weights (``zero_to_fp32``), a DCP
copy of the weights under the plain model's keys (``.metadata`` + ``__0_0.distcp``) so
``dcp.load_model_weights`` (inference, export) and ``model_only`` loads read every strategy's
checkpoints alike, at any world size. A run on as many ranks as wrote ``zero/`` loads it as it is.
A run on another number (one process included: ``init_distributed`` gives it a group of one) has
rank 0 convert it once with DeepSpeed's ``ds_to_universal`` into ``zero_universal/`` (per parameter:
weights, Adam moments), which the engine loads as a universal checkpoint and partitions for its own
ranks; the schedule and the engine's counters come from the model-state file as usual. DeepSpeed
writes synchronously: no background saves (``ParallelModel.supports_async_save``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.distributed.checkpoint as dcp

from pipeline.core.errors import MissingInputError
from pipeline.model.lora import is_adapter
from pipeline.model.transformer import Transformer
from pipeline.parallel.checkpointer import Checkpointer
from pipeline.parallel.dcp import quiet_without_process_group, read_model_weights
from pipeline.parallel.dist import DistInfo, barrier, broadcast_object

TAG = "zero"
"""Sub-directory of a checkpoint with DeepSpeed's files; the step directory around it is already unique."""
UNIVERSAL_TAG = "zero_universal"
"""Sub-directory with the same state in DeepSpeed's universal format (one directory per parameter, not one
file per rank), written when a run on another number of ranks resumes the checkpoint."""


def saved_world_size(directory: str | Path) -> int:
    """How many ranks wrote a ZeRO checkpoint (one optimizer-state file each); 0: none there."""
    return len(list((Path(directory) / TAG).glob("*_optim_states.pt")))


def resume_tag(directory: str | Path, world_size: int) -> str:
    """Which ZeRO state of a checkpoint a run on ``world_size`` ranks loads: DeepSpeed's own (``TAG``) when as
    many ranks wrote it, else its universal conversion (``UNIVERSAL_TAG``, made on first need)."""
    saved_by = saved_world_size(directory)
    if not saved_by:
        raise MissingInputError(
            f"{directory} has no ZeRO state ({TAG}/); a checkpoint of another "
            "strategy can only give the weights (model_only)"
        )
    return TAG if saved_by == world_size else UNIVERSAL_TAG


def convert_to_universal(directory: str | Path) -> Path:
    """DeepSpeed's ``ds_to_universal`` of ``<directory>/zero`` into ``<directory>/zero_universal``; returns
    that.

    Done once: a finished conversion is reused. It is staged in ``zero_universal.tmp/`` and renamed when
    complete (as checkpoints are), so a conversion killed half-way is redone, never loaded.
    """
    from deepspeed.checkpoint import ds_to_universal

    directory = Path(directory)
    final, staging = directory / UNIVERSAL_TAG, directory / f"{UNIVERSAL_TAG}.tmp"
    if final.is_dir():
        return final
    shutil.rmtree(staging, ignore_errors=True)
    # It makes regular expressions of the paths it writes, unescaped (0.19.8), so a '+' or '(' in the output
    # dir's path breaks it: it is given the directory through a symlink with a plain name instead.
    with tempfile.TemporaryDirectory(prefix="lmpipe_universal_") as tmp:
        plain = Path(tmp) / "checkpoint"
        plain.symlink_to(directory.resolve(), target_is_directory=True)
        args = argparse.Namespace(
            input_folder=str(plain / TAG),
            output_folder=str(plain / staging.name),
            num_extract_workers=1,
            num_merge_workers=1,  # in this process: no worker pool
            keep_temp_folder=False,
            strict=True,
            inject_missing_state=True,
        )  # the version stamp our engines do not save
        # It reports every step and file (print and tqdm): keep that out of the training log.
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            ds_to_universal.main(args)
    staging.rename(final)
    (directory / "latest_universal").write_text(
        UNIVERSAL_TAG
    )  # DeepSpeed's pointer; it named the staging dir
    return final


class DeepSpeedCheckpointer(Checkpointer):
    """Saves and loads a ZeRO engine's state (module docstring); ``deepspeed`` is the imported module."""

    def __init__(
        self,
        engine: Any,
        *,
        model: Transformer,
        optimizer: torch.optim.Optimizer,
        stage: int,
        dist: DistInfo,
        deepspeed: ModuleType,
    ):
        self.engine, self.model, self.optimizer = engine, model, optimizer
        self.stage, self.dist, self.deepspeed = stage, dist, deepspeed

    def save(self, directory: str | Path) -> None:
        """DeepSpeed's checkpoint, then rank 0 adds the
        consolidated fp32 weights as DCP (module docstring)."""
        self.engine.save_checkpoint(str(directory), tag=TAG)
        barrier()
        if self.dist.is_main:
            from deepspeed.utils.zero_to_fp32 import (
                get_fp32_state_dict_from_zero_checkpoint,
            )

            # It reports every file and tensor it reads (print and tqdm): keep that out of the training log.
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                weights = get_fp32_state_dict_from_zero_checkpoint(str(directory), tag=TAG)
            # DeepSpeed records frozen weights (LoRA's base) only where it partitions gradients (zero2,
            # zero3); under zero1 every rank holds them whole, and untrained, they are still what was
            # loaded. (A tied head is its own key in the consolidated weights, as in any state dict.)
            for name, param in self.model.named_parameters(remove_duplicate=False):
                if not param.requires_grad and name not in weights:
                    weights[name] = param.detach().float().cpu()
            with quiet_without_process_group():
                dcp.save({"model": weights}, checkpoint_id=str(directory), no_dist=True)
        barrier()

    def load(self, directory: str | Path, *, model_only: bool = False) -> None:
        """DeepSpeed's checkpoint, converted to the universal format first when another number of ranks wrote
        it (module docstring); ``model_only``: the DCP weights of any strategy's checkpoint."""
        if not model_only:
            tag = resume_tag(directory, self.dist.world_size)
            if tag == UNIVERSAL_TAG:
                self._convert_on_main(directory)
            with self._loading_universal(tag == UNIVERSAL_TAG):
                self.engine.load_checkpoint(str(directory), tag=tag)
            if tag == UNIVERSAL_TAG and self.stage == 3:
                self._repair_zero3_universal_load(Path(directory) / UNIVERSAL_TAG)
            if tag == UNIVERSAL_TAG:
                self._load_frozen_weights(directory)
            return
        weights = read_model_weights(self.model, directory)
        for name, param in self.model.named_parameters():
            if is_adapter(name):
                continue  # this model's LoRA adapters keep their init
            # The optimizer's fp32 master copy (a partition of it on this rank; frozen weights have none) ...
            if param.requires_grad:
                self.deepspeed.utils.safe_set_full_fp32_param(param, weights[name].to(self.dist.device))
            # ... and the weights the forward pass uses (under zero3 gathered, set, and partitioned again).
            with self.deepspeed.zero.GatheredParameters([param], modifier_rank=0, enabled=self.stage == 3):
                param.data.copy_(weights[name])

    def _load_frozen_weights(self, directory: str | Path) -> None:
        """A universal load restores only what the ZeRO optimizer holds, the trainable parameters; frozen
        ones (LoRA's base weights) would keep this run's fresh init. They come from the checkpoint's DCP
        copy of the weights instead, under their own names (the adapters beside them are not merged)."""
        frozen = {name: param for name, param in self.model.named_parameters() if not param.requires_grad}
        if not frozen:
            return
        state = {
            "model": {
                name: torch.empty(getattr(param, "ds_shape", param.shape))  # zero3: the full shape
                for name, param in frozen.items()
            }
        }
        with quiet_without_process_group():
            dcp.load(state, checkpoint_id=str(directory), no_dist=True)
        for name, param in frozen.items():
            with self.deepspeed.zero.GatheredParameters([param], modifier_rank=0, enabled=self.stage == 3):
                param.data.copy_(state["model"][name])

    def _convert_on_main(self, directory: str | Path) -> None:
        """Rank 0 converts (once, see ``convert_to_universal``)
        while the others wait; a failure fails every rank."""
        error = None
        if self.dist.is_main:
            try:
                convert_to_universal(directory)
            except Exception as exc:  # whatever it is: raised below on every rank, chained to it on rank 0
                error = exc
        message = broadcast_object(None if error is None else f"{type(error).__name__}: {error}")
        if message is not None:
            raise RuntimeError(
                f"{directory} holds ZeRO state of {saved_world_size(directory)} ranks, and converting "
                f"it to DeepSpeed's universal checkpoint for {self.dist.world_size} failed: {message}"
            ) from error

    def _repair_zero3_universal_load(self, universal: Path) -> None:
        """Undo two slips of DeepSpeed's ZeRO-3 universal load (0.19.8,
        ``load_hp_checkpoint_state_from_checkpoint_dir_stage3``): it gives every param group the first saved
        group's hyperparameters (the no-decay group would decay), and one ``step`` tensor to every group's
        state, which AdamW then advances once per group and step (wrong bias correction from the next step
        on).
        ``self.optimizer`` is ours: the ZeRO optimizer steps it in place."""
        from deepspeed.runtime.fp16.loss_scaler import LossScaler
        from deepspeed.runtime.zero.config import ZeroStageEnum

        # Tensors and plain containers, plus the two DeepSpeed types the file holds (its ZeRO stage, its loss
        # scaler).
        with torch.serialization.safe_globals([ZeroStageEnum, LossScaler]):
            state_file = universal / "zero" / "optimizer_state.pt"
            saved = torch.load(state_file, map_location="cpu", weights_only=True)
        groups = saved["optimizer_state_dict"]["param_groups"]
        for group, saved_group in zip(self.optimizer.param_groups, groups, strict=True):
            group.update({key: value for key, value in saved_group.items() if key != "params"})
        for state in self.optimizer.state.values():
            if torch.is_tensor(state.get("step")):
                state["step"] = state["step"].clone()

    @contextlib.contextmanager
    def _loading_universal(self, universal: bool) -> Iterator[None]:
        """The engine reads which format to load from its config (``checkpoint.load_universal``), fixed when
        it
        was built, before anyone knew which checkpoint comes: set it for this one load."""
        config, logger = self.engine._config, self.deepspeed.utils.logger
        before, level = config.load_universal_checkpoint, logger.level
        config.load_universal_checkpoint = universal
        if universal:
            logger.setLevel(logging.ERROR)  # it warns that no tensor-parallel unit was given: we have none
        try:
            yield
        finally:
            config.load_universal_checkpoint = before
            logger.setLevel(level)
