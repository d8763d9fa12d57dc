"""What the GPU tests share: the CPU tests' tiny job, trained by ``train()`` (what ``lmpipe train`` runs) in
fresh processes joined by a real process group, as torchrun starts them (``pipeline.testing``).

Each job runs in processes of its own, never in the pytest process: a process group is made once per
process, ``run_job`` turns TF32 on process-wide, and a compiled or CUDA-initialised pytest process would
leak all of that into the tests that compare CUDA with the CPU. The fp32 CPU reference runs the same way
with CUDA hidden from its process, so it is the CPU suite's run, on the GPU machine.

Named ``gpu_helpers``, not ``helpers``: the test directories are not packages, so pytest puts each on
``sys.path`` and a module name must be unique over the whole suite.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch

from pipeline.config.train import TrainJobConfig
from pipeline.testing import run_distributed_test

GPU_MARKS = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
    pytest.mark.xdist_group("gpu"),
]
"""Every GPU test module's ``pytestmark``. One xdist worker (``make test``'s ``--dist loadgroup``) runs them
all: the session's shared runs are trained once, and no two jobs contend for the GPUs (a 2-rank job takes
both)."""
TWO_GPUS = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
"""For the 2-rank variants (one GPU per rank, as torchrun places them)."""

TINY = (
    "model.size=tiny",
    "model.seq_len=64",
    "train.global_batch_size=8",
    "train.micro_batch_size=4",
    "train.lr=3e-3",
    "train.warmup_steps=2",
    "train.log_interval=5",
    "train.eval_interval=0",
    "data.val_windows=8",
    "tracking.enabled=false",
)
"""tests/unit/conftest.py's tiny job (its ``pretrained`` run's lr), untracked: the GPU machine has no
MLflow. A global batch of 8 in micro-batches of 4 splits over 1 or 2 ranks, so the 2-rank runs take the
same steps as the 1-rank ones and compare with the same reference."""
STEPS = 30
BF16 = ("train.precision=bf16", f"train.max_steps={STEPS}")
"""The GPU runs: bf16, as a GPU trains."""
FP32 = ("train.precision=fp32", f"train.max_steps={STEPS}")
"""Their CPU reference."""
COMPILED = (*BF16, "train.compile=true", "train.activation_checkpointing=true")
ASYNC = (
    "train.precision=bf16",
    "train.max_steps=20",
    "checkpoint.interval=10",
    "checkpoint.keep=2",
    "checkpoint.async_save=true",
)
"""20 steps, checkpoints at 10 and 20 written in the background while training goes on."""
STRATEGIES = ("ddp", "fsdp", "zero2", "zero3")
ASYNC_STRATEGIES = ("ddp", "fsdp")
"""The strategies that take ``checkpoint.async_save`` (ZeRO's checkpoints are DeepSpeed's own)."""
COMPILED_STRATEGIES = ("ddp", "fsdp", "zero2")
"""Strategies run with ``train.compile`` and ``train.activation_checkpointing`` (zero3: only the latter)."""


def job_config(shards: str | Path, output: str | Path, *overrides: str) -> TrainJobConfig:
    """The tiny job over ``shards`` writing to ``output``, as ``lmpipe train`` loads it (validated)."""
    return TrainJobConfig.load(None, [f"data.shards={shards}", f"output_dir={output}", *TINY, *overrides])


def gpu_jobs() -> dict[str, tuple[str, ...]]:
    """The overrides of every job the GPU tests train (without data and output), by a short name: what
    ``test_gpu_helpers`` validates on any machine, so a renamed option fails there, not on a lent GPU."""
    jobs = {"fp32": FP32} | {f"bf16-{s}": (*BF16, f"parallel.strategy={s}") for s in STRATEGIES}
    jobs |= {f"compiled-{s}": (*COMPILED, f"parallel.strategy={s}") for s in COMPILED_STRATEGIES}
    return jobs | {f"async-{s}": (*ASYNC, f"parallel.strategy={s}") for s in ASYNC_STRATEGIES}


@dataclass(frozen=True)
class Trained:
    """A finished job, as rank 0 saw it."""

    output: Path
    result: dict[str, Any]
    """``result.json``'s fields (``TrainResult``)."""
    on_cuda: list[bool]
    """Per rank: whether it saw CUDA (``init_distributed`` then puts the job on its GPU)."""
    cuda_peak_bytes: int
    """Rank 0's peak CUDA memory: > 0 only if the model and batches were on the GPU."""
    compiled_graphs: int
    """Graphs torch.compile made in rank 0 (0 without ``train.compile``)."""


def _train_rank(shards: str, output: str, overrides: list[str]) -> dict[str, Any]:
    """One rank of a job (module level: the spawned ranks import it)."""
    from torch._dynamo.utils import counters

    from pipeline.train.pretrain import train

    result = train(job_config(shards, output, *overrides))
    cuda = torch.cuda.is_available()
    return {
        "result": asdict(result),
        "on_cuda": cuda,
        "cuda_peak_bytes": torch.cuda.max_memory_allocated() if cuda else 0,
        "compiled_graphs": counters["stats"]["unique_graphs"],
    }


def train_job(shards: Path, output: Path, *overrides: str, nproc: int = 1, cuda: bool = True) -> Trained:
    """Train the tiny job with ``overrides`` on ``nproc`` ranks: on the GPUs (nccl), or with ``cuda`` False
    on the CPU (gloo, CUDA hidden from the ranks)."""
    env = {
        # tests/conftest.py sets DS_ACCELERATOR=cpu for the CPU suite; DeepSpeed reads it at import, so a
        # ZeRO rank on a GPU must be told otherwise. Hidden CUDA makes the CPU reference a CPU run.
        "DS_ACCELERATOR": "cuda" if cuda else "cpu",
        **({} if cuda else {"CUDA_VISIBLE_DEVICES": ""}),
    }
    with mock.patch.dict(os.environ, env):  # the spawned ranks take the environment as it is now
        ranks = run_distributed_test(
            _train_rank,
            world_size=nproc,
            backend="nccl" if cuda else "gloo",
            start_method="spawn",  # a CUDA rank initialises CUDA itself: no fork from a shared server
            timeout_s=300,
            shards=str(shards),
            output=str(output),
            overrides=list(overrides),
        )
    return Trained(
        output=output,
        result=ranks[0]["result"],
        on_cuda=[rank["on_cuda"] for rank in ranks],
        cuda_peak_bytes=ranks[0]["cuda_peak_bytes"],
        compiled_graphs=ranks[0]["compiled_graphs"],
    )


class TrainedRuns:
    """Jobs trained once per session and shared read-only: the fp32 CPU reference, and the bf16 ddp run
    that is both a strategy under test and the eager twin of the compiled run and the checkpoint the
    inference tests load."""

    def __init__(self, shards: Path, root: Path) -> None:
        self.shards, self.root = shards, root
        self.runs: dict[tuple[Any, ...], Trained] = {}

    def get(self, *overrides: str, nproc: int = 1, cuda: bool = True) -> Trained:
        key = (overrides, nproc, cuda)
        if key not in self.runs:
            output = self.root / f"run{len(self.runs)}"
            self.runs[key] = train_job(self.shards, output, *overrides, nproc=nproc, cuda=cuda)
        return self.runs[key]

    def reference(self) -> Trained:
        """The fp32 run in one CPU process."""
        return self.get(*FP32, cuda=False)

    def bf16(self, strategy: str, nproc: int = 1) -> Trained:
        return self.get(*BF16, f"parallel.strategy={strategy}", nproc=nproc)
