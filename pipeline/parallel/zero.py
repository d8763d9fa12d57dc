"""DeepSpeed ZeRO stages 1-3: the engine from a ds_config generated from our config.

What is ours and what is DeepSpeed's:

- Optimizer and schedule are ours (``optim.build_optimizer`` / ``build_scheduler``) and handed
  to ``deepspeed.initialize``: the same AdamW groups and LR curve as ddp/fsdp, and no JIT build
  of DeepSpeed's fused Adam. The engine steps the schedule with the optimizer.
- Gradient scaling: ``train_step`` already divides each micro-batch's loss so that averaging over
  ranks gives the global-batch gradient, so ``backward`` passes ``scale_wrt_gas=False`` (the
  engine would divide by gradient_accumulation_steps once more). With
  ``managed_gradient_accumulation: false`` the engine only accumulates in ``backward`` and
  reduces in ``step()``, which the loop calls once per optimizer step: the same contract as
  ddp's ``no_sync``, so ``accumulate`` needs no context of its own.
- Clipping is the engine's (``gradient_clipping`` = ``train.grad_clip``), the same rule as
  ``clip_grad_norm_``; ``step()`` returns the engine's pre-clip global norm.
- Non-finite gradients: the ZeRO optimizers check the global norm in ``step()`` and, when it is
  inf/NaN, drop the gradients without updating weights, optimizer state or schedule (their
  overflow path; ``engine.skipped_steps`` counts it). ``skip_step`` goes through that same path
  (see there), since the engine's accumulation state (partitioned gradient buffers, micro-step
  and sample counters) is only reset correctly by a ``step()``.

Checkpoints: DeepSpeed's own format (``latest``, ``zero/`` with one model and one optimizer file
per rank, ``zero_to_fp32.py``); plus, written by rank 0 from the fp32 master weights
(``zero_to_fp32``), a DCP copy of the weights under the plain model's keys (``.metadata`` +
``__0_0.distcp``) so ``load_model_weights`` (inference, export) and ``model_only`` loads read
every strategy's checkpoints alike, at any world size. A run on as many ranks as wrote ``zero/``
loads it as it is. A run on another number (one process included: ``init_distributed`` gives it a
group of one) has rank 0 convert it once with DeepSpeed's ``ds_to_universal`` into
``zero_universal/`` (per parameter: weights, Adam moments), which the engine loads as a universal
checkpoint and partitions for its own ranks; the schedule and the engine's counters come from the
model-state file as usual.

Not JIT-compiled: the shm all-reduce op (only used for inference) is switched off and the
optimizer is torch's, so a cold machine builds nothing (docs: PLATFORM.md section 2).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import torch
import torch.distributed.checkpoint as dcp

from pipeline.config.parallel import ParallelConfig
from pipeline.config.train import LoopConfig
from pipeline.model.lora import is_adapter
from pipeline.model.transformer import Transformer
from pipeline.parallel.base import (
    ParallelModel,
    init_on_cpu,
    quiet_without_process_group,
    read_model_weights,
    require_process_group,
)
from pipeline.parallel.dist import DistInfo, barrier, broadcast_object
from pipeline.parallel.optim import build_optimizer, build_scheduler

TAG = "zero"
"""Sub-directory of a checkpoint with DeepSpeed's files; the step directory around it is already unique."""
UNIVERSAL_TAG = "zero_universal"
"""Sub-directory with the same state in DeepSpeed's universal format (one directory per parameter, not one
file per rank), written when a run on another number of ranks resumes the checkpoint."""


def ds_config(
    loop: LoopConfig, options: ParallelConfig, *, stage: int, world_size: int, on_cuda: bool
) -> dict[str, Any]:
    """The engine's configuration, from ours (see the module docstring for why each switch is set)."""
    zero: dict[str, Any] = {"stage": stage}
    if options.zero_offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": on_cuda}
    if options.zero_offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": on_cuda}
    bf16 = loop.precision == "bf16"
    return {
        "train_batch_size": loop.global_batch_size,
        "train_micro_batch_size_per_gpu": loop.micro_batch_size,
        "gradient_accumulation_steps": loop.grad_accum_steps(world_size),
        "managed_gradient_accumulation": False,
        "gradient_clipping": loop.grad_clip,
        "bf16": {"enabled": bf16},
        # bf16 compute, but gradients reduced in fp32, as fsdp's MixedPrecisionPolicy does.
        **({"communication_data_type": "fp32"} if bf16 else {}),
        "zero_optimization": zero,
        # Our torch AdamW under ZeRO-Offload: slower than DeepSpeedCPUAdam, but nothing to compile.
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 2**31 - 1,
    }


def import_deepspeed(device_type: str) -> ModuleType:
    """deepspeed, imported on first use (it takes seconds), for ``device_type``, with nothing to JIT-compile."""
    os.environ.setdefault(
        "DS_ACCELERATOR", device_type
    )  # read at import; also silences the auto-detect warning
    import deepspeed
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    # DeepSpeed's ZeRO code calls these collectives by their old names on every gather: harmless, and loud.
    warnings.filterwarnings(
        "ignore",
        message=r"`torch\.distributed\.(all_gather_into_tensor|reduce_scatter_tensor)` "
        "is deprecated",
        category=FutureWarning,
    )
    return deepspeed


def saved_world_size(directory: str | Path) -> int:
    """How many ranks wrote a ZeRO checkpoint (one optimizer-state file each); 0: none there."""
    return len(list((Path(directory) / TAG).glob("*_optim_states.pt")))


def resume_tag(directory: str | Path, world_size: int) -> str:
    """Which ZeRO state of a checkpoint a run on ``world_size`` ranks loads: DeepSpeed's own (``TAG``) when as
    many ranks wrote it, else its universal conversion (``UNIVERSAL_TAG``, made on first need)."""
    saved_by = saved_world_size(directory)
    if not saved_by:
        raise FileNotFoundError(
            f"{directory} has no ZeRO state ({TAG}/); a checkpoint of another "
            "strategy can only give the weights (model_only)"
        )
    return TAG if saved_by == world_size else UNIVERSAL_TAG


def convert_to_universal(directory: str | Path) -> Path:
    """DeepSpeed's ``ds_to_universal`` of ``<directory>/zero`` into ``<directory>/zero_universal``; returns that.

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


class DeepSpeedModel(ParallelModel):
    """A ZeRO stage over the ranks (the subclasses name the stage)."""

    stage: ClassVar[int]

    def __init__(
        self,
        model: Transformer,
        *,
        dist: DistInfo,
        loop: LoopConfig,
        total_steps: int,
        options: ParallelConfig,
    ):
        super().__init__(dist=dist, loop=loop, options=options)
        require_process_group(self.strategy)
        if loop.compile or loop.activation_checkpointing:
            raise ValueError(
                f"train.compile and train.activation_checkpointing are for ddp and fsdp, not "
                f"{self.strategy} (ZeRO's parameter hooks are untested under them)"
            )
        self.autocast_dtype = None  # the engine casts the model itself when bf16 is on
        self.deepspeed = import_deepspeed(dist.device.type)
        os.environ.setdefault(
            "LOCAL_RANK", str(dist.local_rank)
        )  # the engine asserts it; one process has none
        config = ds_config(
            loop, options, stage=self.stage, world_size=dist.world_size, on_cuda=dist.device.type == "cuda"
        )
        self.model = init_on_cpu(model).to(
            dist.device
        )  # same initial weights as every strategy (parallel_base)
        self.optimizer = build_optimizer(model, loop)
        self.scheduler = build_scheduler(self.optimizer, loop, total_steps=total_steps)
        self.engine, *_ = self.deepspeed.initialize(
            model=model, optimizer=self.optimizer, lr_scheduler=self.scheduler, config=config
        )

    def __call__(
        self,
        tokens: torch.Tensor,
        targets: torch.Tensor,
        *,
        reduction: str = "mean",
        doc_starts: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.engine(tokens, targets, reduction=reduction, doc_starts=doc_starts)

    def accumulate(self, *, sync: bool) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()  # the engine reduces in step() (managed_gradient_accumulation off)

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss, scale_wrt_gas=False)

    def step(self) -> float:
        self.engine.step()
        if not self.engine.was_step_applied():
            return math.inf  # the optimizer's overflow path dropped non-finite gradients (module docstring)
        return float(self.engine.get_global_grad_norm())

    def skip_step(self) -> None:
        """One extra micro-step whose loss is NaN, then ``step()``: every gradient is then NaN, so the
        ZeRO optimizer takes its own overflow path, which clears its partitioned buffers and counters
        consistently (``engine.zero_grad()`` would only clear ``param.grad``, leaving ZeRO-2/3's
        reduced partitions to leak into the next step)."""
        token = torch.zeros((1, 1), dtype=torch.long, device=self.dist.device)
        _, loss = self.engine(token, token, reduction="sum")
        self.engine.backward(loss * math.nan, scale_wrt_gas=False)
        if math.isfinite(self.step()):
            raise RuntimeError("DeepSpeed applied an update from NaN gradients; its overflow check is off")

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError("ZeRO state is saved in DeepSpeed's format: use save()")

    def save(self, directory: str | Path) -> None:
        """DeepSpeed's checkpoint, then rank 0 adds the consolidated fp32 weights as DCP (module docstring)."""
        self.engine.save_checkpoint(str(directory), tag=TAG)
        barrier()
        if self.dist.is_main:
            from deepspeed.utils.zero_to_fp32 import (
                get_fp32_state_dict_from_zero_checkpoint,
            )

            # It reports every file and tensor it reads (print and tqdm): keep that out of the training log.
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                weights = get_fp32_state_dict_from_zero_checkpoint(str(directory), tag=TAG)
            # DeepSpeed records frozen weights (LoRA's base) only where it partitions gradients (zero2, zero3);
            # under zero1 every rank holds them whole, and untrained, they are still what was loaded. (A tied
            # head is its own key in the consolidated weights, as in any state dict.)
            for name, param in self.model.named_parameters(remove_duplicate=False):
                if not param.requires_grad and name not in weights:
                    weights[name] = param.detach().float().cpu()
            with quiet_without_process_group():
                dcp.save({"model": weights}, checkpoint_id=str(directory), no_dist=True)
        barrier()

    def save_async(self, directory: str | Path, *, process_group: Any) -> Future:
        raise ValueError(
            "checkpoint.async_save is for ddp and fsdp; DeepSpeed writes ZeRO checkpoints itself"
        )

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
        """Rank 0 converts (once, see ``convert_to_universal``) while the others wait; a failure fails every rank."""
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
        state, which AdamW then advances once per group and step (wrong bias correction from the next step on).
        ``self.optimizer`` is ours: the ZeRO optimizer steps it in place."""
        from deepspeed.runtime.fp16.loss_scaler import LossScaler
        from deepspeed.runtime.zero.config import ZeroStageEnum

        # Tensors and plain containers, plus the two DeepSpeed types the file holds (its ZeRO stage, its loss scaler).
        with torch.serialization.safe_globals([ZeroStageEnum, LossScaler]):
            saved = torch.load(
                universal / "zero" / "optimizer_state.pt", map_location="cpu", weights_only=True
            )
        groups = saved["optimizer_state_dict"]["param_groups"]
        for group, saved_group in zip(self.optimizer.param_groups, groups, strict=True):
            group.update({key: value for key, value in saved_group.items() if key != "params"})
        for state in self.optimizer.state.values():
            if torch.is_tensor(state.get("step")):
                state["step"] = state["step"].clone()

    @contextlib.contextmanager
    def _loading_universal(self, universal: bool) -> Iterator[None]:
        """The engine reads which format to load from its config (``checkpoint.load_universal``), fixed when it
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


class ZeRO1Model(DeepSpeedModel):
    strategy, stage = "zero1", 1


class ZeRO2Model(DeepSpeedModel):
    strategy, stage = "zero2", 2


class ZeRO3Model(DeepSpeedModel):
    strategy, stage = "zero3", 3
