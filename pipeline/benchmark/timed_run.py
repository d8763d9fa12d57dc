"""A timed run of the training step ``lmpipe train`` takes, on random tokens.

The model is built as the pretraining job builds it (``build_model`` on the meta device, then
``parallelize`` by the chosen strategy, compile and precision from a ``LoopConfig``), and every step is
``loop.train_step``: forward, backward, gradient sync, clip, AdamW and schedule. Left out, because
they are not the hardware's speed: the token loader (one random batch per rank, reused, in pinned
memory on CUDA as the loader's are), validation, checkpoints and tracking.

The run is a number of steps, not a deadline: every rank must take the same steps (each is collective),
so rank 0 times a few steps after the warm-up and all ranks then take the count that fills ``seconds``.
"""

from __future__ import annotations

import math
import resource
import sys
import time
from dataclasses import dataclass

import torch

from pipeline.benchmark.collectives import synchronize
from pipeline.benchmark.config import NodeBenchConfig
from pipeline.config.model import ModelConfig
from pipeline.config.parallel import ParallelConfig
from pipeline.config.train import LoopConfig
from pipeline.model.ladder import default_lr
from pipeline.model.transformer import build_model
from pipeline.parallel.base import ParallelModel
from pipeline.parallel.dist import DistInfo, broadcast_object
from pipeline.parallel.registry import parallelize
from pipeline.train.cuda import enable_tf32, pin_batches
from pipeline.train.data import Batch
from pipeline.train.loop import train_step
from pipeline.train.mfu import flops_per_token, mfu, peak_flops

SCHEDULE_STEPS = 1_000_000
"""The LR schedule's length: a warm-up this long keeps the learning rate near 0 for any run of the
benchmark, so random tokens cannot drive the loss non-finite, which would skip steps (and time less
work). The schedule costs the same per step whatever its values."""
CALIBRATION_STEPS = 2


@dataclass(frozen=True)
class TimedRunResult:
    steps: int
    seconds: float
    """Wall time of the timed steps on this rank."""
    tokens_per_s_per_device: float
    """All ranks' tokens over the time, per rank (per GPU)."""
    mfu: float | None
    """None without a peak for this device (a CPU)."""
    flops_per_token: float
    n_params: int
    """Non-embedding N, as the training job counts it."""
    skipped_steps: int
    """Timed steps with a non-finite loss or gradient norm: did less work; should be 0."""
    peak_memory_bytes: int
    memory_kind: str
    """What ``peak_memory_bytes`` is (the CUDA allocator's peak, or the process's peak RSS)."""


def timed_run(cfg: NodeBenchConfig, dist: DistInfo) -> TimedRunResult:
    """Build, warm up, calibrate, then time ``cfg.seconds`` of training steps (module docstring)."""
    enable_tf32(dist.device)  # as run_job does, before peak_flops counts fp32 against the TF32 peak
    if dist.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dist.device)
    parallel = _build(cfg, dist)
    batch = _random_batch(cfg, dist)
    for _ in range(cfg.warmup_steps):
        train_step(parallel, [batch], dist=dist)
    synchronize(dist.device)
    started = time.perf_counter()
    for _ in range(CALIBRATION_STEPS):
        train_step(parallel, [batch], dist=dist)
    synchronize(dist.device)
    per_step = (time.perf_counter() - started) / CALIBRATION_STEPS
    steps = broadcast_object(max(1, math.ceil(cfg.seconds / per_step)))  # rank 0's count, on every rank
    assert isinstance(steps, int)
    skipped = 0
    synchronize(dist.device)
    started = time.perf_counter()
    for _ in range(steps):
        loss, grad_norm = train_step(parallel, [batch], dist=dist)
        skipped += not (math.isfinite(loss) and math.isfinite(grad_norm))
    synchronize(dist.device)  # a step reads its loss back before its update, which may still be queued
    seconds = time.perf_counter() - started
    args = parallel.model.args
    token_flops = flops_per_token(
        parallel.n_params, args.n_layers, args.d_model, args.seq_len, vocab_size=args.vocab_size
    )
    tokens = steps * cfg.micro_batch * cfg.seq_len * parallel.dp_size
    per_device = tokens / seconds / dist.world_size
    memory, kind = peak_memory(dist.device)
    return TimedRunResult(
        steps=steps,
        seconds=seconds,
        tokens_per_s_per_device=per_device,
        mfu=mfu(per_device, token_flops, peak_flops(dist.device, cfg.precision)),
        flops_per_token=token_flops,
        n_params=parallel.n_params,
        skipped_steps=skipped,
        peak_memory_bytes=memory,
        memory_kind=kind,
    )


def _build(cfg: NodeBenchConfig, dist: DistInfo) -> ParallelModel:
    """The model and strategy as ``pretrain.train`` builds them, one micro-batch per optimizer step."""
    args = ModelConfig(size=cfg.size, seq_len=cfg.seq_len).args(vocab_size=cfg.vocab_size)
    options = ParallelConfig(strategy=cfg.strategy)
    loop = LoopConfig(
        max_steps=SCHEDULE_STEPS,
        global_batch_size=cfg.micro_batch * options.dp_size(dist.world_size),
        micro_batch_size=cfg.micro_batch,
        lr=default_lr(args.non_embedding_params()),
        warmup_steps=SCHEDULE_STEPS,
        precision=cfg.precision,
        compile=cfg.compile,
    )
    loop.validate()
    torch.manual_seed(loop.seed)
    return parallelize(build_model(args), strategy=options, dist=dist, loop=loop, total_steps=SCHEDULE_STEPS)


def _random_batch(cfg: NodeBenchConfig, dist: DistInfo) -> Batch:
    """(inputs, targets) of uniform random tokens, different on each rank: speed does not depend on them."""
    generator = torch.Generator().manual_seed(dist.rank)
    tokens = torch.randint(0, cfg.vocab_size, (cfg.micro_batch, cfg.seq_len + 1), generator=generator)
    inputs, targets = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()
    if pin_batches(dist.device):
        inputs, targets = inputs.pin_memory(), targets.pin_memory()
    return inputs, targets


def peak_memory(device: torch.device) -> tuple[int, str]:
    """(bytes, what they are): on CUDA the allocator's peak since the run started (the model, its
    optimizer state and activations); elsewhere the peak resident memory of the whole process, imports
    included (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "torch.cuda.max_memory_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (rss if sys.platform == "darwin" else rss * 1024), "peak RSS (ru_maxrss)"
