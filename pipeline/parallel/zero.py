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

Placement: zero1/2 materialise the whole model on every rank, as ddp does; zero3 builds it under
``deepspeed.zero.Init``, so each rank holds only its partitions from construction on (``ZeRO3Model.place``).
Either way every strategy starts from the same initial weights (``parallel.init``).

Checkpoints: DeepSpeed's own format, plus a DCP copy of the weights (``zero_checkpoint``).

Not JIT-compiled: the shm all-reduce op (only used for inference) is switched off and the
optimizer is torch's, so a cold machine builds nothing (docs: PLATFORM.md section 2).
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from types import ModuleType
from typing import Any, ClassVar

import torch

from pipeline.config.parallel import ParallelConfig
from pipeline.config.train import LoopConfig
from pipeline.model.init import full_parameter
from pipeline.model.lora import adapter_config
from pipeline.model.transformer import Transformer, rope_tables
from pipeline.parallel.base import ParallelModel, prepare_blocks
from pipeline.parallel.dist import DistInfo
from pipeline.parallel.init import init_on_cpu
from pipeline.parallel.optim import build_optimizer, build_scheduler
from pipeline.parallel.zero_checkpoint import DeepSpeedCheckpointer


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
        # bf16 compute; gradients reduced in fp32 (communication_data_type) and, for ZeRO-2/3, summed over
        # micro-batches in fp32 (grad_accum_dtype): DeepSpeed's default for both is the model's bf16,
        # whose 8-bit mantissa drops small micro-batch gradients from the sum. ZeRO-1 keeps bf16 sums in
        # param.grad: asking it for fp32 swaps in DeepSpeed's BF16_Optimizer, whose grad norm and
        # overflow path do not keep this class's contract (step(), skip_step()).
        **({"communication_data_type": "fp32"} if bf16 else {}),
        **({"data_types": {"grad_accum_dtype": "fp32"}} if bf16 and stage >= 2 else {}),
        "zero_optimization": zero,
        # Our torch AdamW under ZeRO-Offload: slower than DeepSpeedCPUAdam, but nothing to compile.
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 2**31 - 1,
    }


def import_deepspeed(device_type: str) -> ModuleType:
    """deepspeed, imported on first use (it takes seconds),
    for ``device_type``, with nothing to JIT-compile."""
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


class DeepSpeedModel(ParallelModel):
    """A ZeRO stage over the ranks (the subclasses name the stage)."""

    stage: ClassVar[int]
    checkpoint_format = "deepspeed"
    supports_async_save = False
    needs_process_group = True

    def __init__(
        self,
        model: Transformer,
        *,
        dist: DistInfo,
        loop: LoopConfig,
        total_steps: int,
        options: ParallelConfig,
    ):
        super().__init__(model, dist=dist, loop=loop, total_steps=total_steps, options=options)
        self.autocast_dtype = None  # the engine casts the model itself when bf16 is on
        self.deepspeed = import_deepspeed(dist.device.type)
        os.environ.setdefault(
            "LOCAL_RANK", str(dist.local_rank)
        )  # the engine asserts it; one process has none
        config = ds_config(
            loop, options, stage=self.stage, world_size=dist.world_size, on_cuda=dist.device.type == "cuda"
        )
        self.model = prepare_blocks(self.place(model, config), loop)
        self.optimizer = build_optimizer(self.model, loop)
        self.scheduler = build_scheduler(self.optimizer, loop, total_steps=total_steps)
        self.engine, *_ = self.deepspeed.initialize(
            model=self.model, optimizer=self.optimizer, lr_scheduler=self.scheduler, config=config
        )
        self.checkpointer = DeepSpeedCheckpointer(
            self.engine,
            model=self.model,
            optimizer=self.optimizer,
            stage=self.stage,
            dist=dist,
            deepspeed=self.deepspeed,
        )

    def place(self, model: Transformer, config: dict[str, Any]) -> Transformer:
        """The meta-built ``model`` materialised on this rank's device with the initial weights every
        strategy starts from (``parallel.init``), for ``deepspeed.initialize`` to wrap."""
        return init_on_cpu(model).to(self.dist.device)

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

    def grad_norm(self) -> None:
        """Unknown before ``step``: the engine reduces the gradients, measures their norm and skips a
        non-finite one inside ``engine.step()``, with host syncs of DeepSpeed's own."""
        return None

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


class ZeRO1Model(DeepSpeedModel):
    strategy, stage = "zero1", 1


class ZeRO2Model(DeepSpeedModel):
    strategy, stage = "zero2", 2


class ZeRO3Model(DeepSpeedModel):
    strategy, stage = "zero3", 3
    supports_compile = False  # its parameter hooks break every block's graph (StrategyTraits.compile)

    def place(self, model: Transformer, config: dict[str, Any]) -> Transformer:
        """Built under ``deepspeed.zero.Init``: each module's parameters are partitioned as soon as it is
        constructed, so no rank ever holds the whole model (materialising it first, then partitioning in
        ``deepspeed.initialize``, put the full fp32 model on every GPU). A model with LoRA adapters is
        still placed whole (``apply_lora`` swaps modules of a built model, which would have to be
        gathered first)."""
        if adapter_config(model) is not None:
            return super().place(model, config)
        # The modules' own default init draws from the global generators: keep them where they were, as
        # a meta-built model leaves them, so the run's later draws do not depend on the strategy.
        forked = [self.dist.device] if self.dist.device.type == "cuda" else []
        # zero.Init reads the world size from DeepSpeed's communicator, which deepspeed.initialize would
        # set up only later: wrap our process group in it now (it keeps the group and its timeout).
        self.deepspeed.init_distributed(dist_backend=torch.distributed.get_backend(), verbose=False)
        with torch.random.fork_rng(devices=forked), self.deepspeed.zero.Init(config_dict_or_path=config):
            partitioned = Transformer(model.args)
        init_partitioned(partitioned, self.deepspeed, device=self.dist.device)
        return partitioned


@torch.no_grad()
def init_partitioned(model: Transformer, deepspeed: ModuleType, *, device: torch.device) -> None:
    """Draw the initial weights of a model built under ``zero.Init`` by the same per-parameter rule as every
    strategy (``parallel.init``): one parameter gathered at a time, rank 0 fills it and DeepSpeed partitions
    it again from rank 0's copy. Outside ``zero.Init``, whose tensor factories would make the RoPE tables
    and the drawn weights in its dtype (bf16) on its device."""
    seed, rank = torch.initial_seed(), torch.distributed.get_rank()
    for name, param in model.named_parameters():  # a tied head is listed once, as tok_embeddings.weight
        with deepspeed.zero.GatheredParameters([param], modifier_rank=0):
            if rank == 0:
                param.copy_(full_parameter(name, param.shape, seed=seed, n_layers=model.args.n_layers))
    model.rope_cos, model.rope_sin = rope_tables(model.args, device=device)
