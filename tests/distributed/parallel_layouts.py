"""What the tensor-parallel and HSDP tests share: the tiny model, a global batch per step, a layout's
training steps, and one launch that trains, checkpoints and resumes several layouts in turn.

A layout is a ``ParallelConfig`` (strategy, ``tp``, ``dp_replicate``); each rank trains on its data-parallel
replica's slice of the global batch (``ParallelConfig.dp_rank``: a tensor-parallel group shares one), so
every layout should match one process on the whole batch (``reference``) up to summation order.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pipeline.config.model import ModelConfig
from pipeline.config.parallel import ParallelConfig
from pipeline.config.train import LoopConfig
from pipeline.model.transformer import build_model
from pipeline.parallel.base import ParallelModel
from pipeline.parallel.dist import DistInfo, init_distributed
from pipeline.parallel.registry import parallelize
from pipeline.train.loop import train_step

# vocab and heads divisible by 2: tp 2 splits them (tiny: 4 heads, 2 kv heads, ffn 384)
ARGS = ModelConfig(size="tiny", seq_len=16).args(vocab_size=104)
LOOP = LoopConfig(global_batch_size=8, micro_batch_size=2, warmup_steps=2, lr=3e-3, grad_clip=1.0)
STEPS, SAVE_AT, SEED = 20, 10, 1234
LOSS_RTOL, NORM_RTOL = 1e-5, 2e-4
"""Against the 1-process reference; see the tests' docstrings for what was measured."""


@dataclass(frozen=True)
class Layout:
    """One run of a launch: trained from scratch with a checkpoint at SAVE_AT, or (``resume``) the
    continuation after SAVE_AT of another run's checkpoint."""

    label: str
    options: dict[str, Any] = field(default_factory=dict)
    resume: str = ""
    """The label of an earlier run of the launch whose checkpoint this one continues."""


def global_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.randint(
        0,
        ARGS.vocab_size,
        (LOOP.global_batch_size, ARGS.seq_len + 1),
        generator=torch.Generator().manual_seed(step),
    )
    inputs, targets = tokens[:, :-1], tokens[:, 1:].clone()
    targets[0, :12] = -100  # replicas and micro-batches hold different numbers of targets
    targets[5, 4:] = -100
    return inputs, targets


def build(options: ParallelConfig, info: DistInfo, seed: int = SEED) -> ParallelModel:
    torch.manual_seed(seed)
    return parallelize(build_model(ARGS), strategy=options, dist=info, loop=LOOP, total_steps=STEPS)


def train_steps(parallel: ParallelModel, info: DistInfo, steps: range) -> tuple[list[float], list[float]]:
    """(losses, grad norms) of ``steps``, each replica taking its slice of the global batch."""
    options = parallel.options
    replicas, replica = options.dp_size(info.world_size), options.dp_rank(info.rank)
    share = LOOP.global_batch_size // replicas
    losses, norms = [], []
    for step in steps:
        inputs, targets = global_batch(step)
        mine = slice(replica * share, (replica + 1) * share)
        inputs, targets = inputs[mine], targets[mine]
        micro = [
            (inputs[i : i + LOOP.micro_batch_size], targets[i : i + LOOP.micro_batch_size])
            for i in range(0, share, LOOP.micro_batch_size)
        ]
        loss, norm = train_step(parallel, micro, dist=info)
        losses.append(loss)
        norms.append(norm)
    return losses, norms


def local_fraction(parallel: ParallelModel) -> float:
    """How much of one attention matrix this rank holds: 1 replicated, less when split (TP, FSDP)."""
    weight = parallel.model.layers[0].attention.wq.weight
    local = weight.to_local() if hasattr(weight, "to_local") else weight
    return local.numel() / weight.numel()


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """One intra-op thread for a run in the test process: on a shared 2-core machine a busy neighbour
    makes two threads' OpenMP barriers spin (measured: 30 s instead of 2 s for ``reference``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def reference() -> dict[str, list[float]]:
    """ddp in this process, no group: every step over the whole global batch."""
    info = DistInfo()
    with one_thread():
        losses, norms = train_steps(build(ParallelConfig(strategy="ddp"), info), info, range(STEPS))
    return {"losses": losses, "norms": norms}


def run_layouts(layouts: list[Layout], checkpoint_root: str) -> dict[str, dict[str, Any]]:
    """On each rank, the ``layouts`` in order (``Layout``); checkpoints under ``checkpoint_root/<label>``."""
    info = init_distributed()
    out: dict[str, dict[str, Any]] = {}
    for layout in layouts:
        started = time.perf_counter()
        parallel = build(ParallelConfig(**layout.options), info, seed=SEED + 1 if layout.resume else SEED)
        entry: dict[str, Any] = {"local_fraction": local_fraction(parallel)}
        if layout.resume:
            parallel.load(Path(checkpoint_root) / layout.resume)
            entry["losses"], entry["norms"] = train_steps(parallel, info, range(SAVE_AT, STEPS))
        else:
            losses, norms = train_steps(parallel, info, range(SAVE_AT))
            parallel.save(Path(checkpoint_root) / layout.label)
            more = train_steps(parallel, info, range(SAVE_AT, STEPS))
            entry["losses"], entry["norms"] = losses + more[0], norms + more[1]
        entry["seconds"] = time.perf_counter() - started
        out[layout.label] = entry
    return out


def resume_in_one_process(checkpoint: Path) -> list[float]:
    """ddp in this process, no group, continues ``checkpoint`` (written at SAVE_AT): its losses."""
    info = DistInfo()
    with one_thread():
        parallel = build(ParallelConfig(strategy="ddp"), info, seed=SEED + 1)
        parallel.load(checkpoint)
        return train_steps(parallel, info, range(SAVE_AT, STEPS))[0]
