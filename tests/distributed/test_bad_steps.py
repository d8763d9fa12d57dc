"""A non-finite step on a real 2-rank gloo group: every strategy skips it without a trace (the steps
after it match a run that never saw it, so no NaN stays in DDP buckets, FSDP shards or ZeRO's
partitioned buffers), and ``max_bad_steps`` in a row stop every rank with ``TrainingDiverged``."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from pipeline.config.model import ModelConfig
from pipeline.config.parallel import ParallelConfig
from pipeline.config.train import LoopConfig
from pipeline.model.transformer import build_model
from pipeline.parallel.base import ParallelModel
from pipeline.parallel.dist import DistInfo, init_distributed
from pipeline.parallel.registry import parallelize
from pipeline.testing import run_distributed_test
from pipeline.train.hooks import default_hooks
from pipeline.train.loop import TrainingDiverged, TrainRun, run_loop, train_step
from pipeline.train.tracking import Tracker

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

ARGS = ModelConfig(size="tiny", seq_len=16).args(vocab_size=101)
LOOP = LoopConfig(
    global_batch_size=8, micro_batch_size=2, warmup_steps=2, lr=3e-3, grad_clip=1.0, max_bad_steps=2
)
STRATEGIES = ["ddp", "fsdp", "zero1", "zero2", "zero3"]
NAN_STEP = 99


def micro_batches(step: int, info: DistInfo) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's micro-batches of global batch ``step``."""
    share = LOOP.global_batch_size // info.world_size
    tokens = torch.randint(
        0,
        ARGS.vocab_size,
        (share, ARGS.seq_len + 1),
        generator=torch.Generator().manual_seed(1000 * step + info.rank),
    )
    inputs, targets = tokens[:, :-1], tokens[:, 1:].clone()
    return [
        (inputs[i : i + LOOP.micro_batch_size], targets[i : i + LOOP.micro_batch_size])
        for i in range(0, share, LOOP.micro_batch_size)
    ]


def build(strategy: str, info: DistInfo) -> tuple[ParallelModel, list[bool]]:
    """The model, and a switch that (test-only fault) turns the final norm's output to NaN on rank 0 only."""
    torch.manual_seed(0)
    parallel = parallelize(
        build_model(ARGS), strategy=ParallelConfig(strategy=strategy), dist=info, loop=LOOP, total_steps=10
    )
    poison = [False]
    if info.rank == 0:
        parallel.model.norm.register_forward_hook(lambda _m, _i, out: out * math.nan if poison[0] else out)
    return parallel, poison


def run(steps: list[int], strategy: str, info: DistInfo) -> list[tuple[float, float]]:
    parallel, poison = build(strategy, info)
    results = []
    for step in steps:
        poison[0] = step == NAN_STEP
        results.append(train_step(parallel, micro_batches(step, info), dist=info))
    if strategy.startswith("zero"):
        assert parallel.engine.skipped_steps == steps.count(NAN_STEP)
    return results


def diverge(strategy: str, info: DistInfo) -> tuple[str, list[int]]:
    parallel, poison = build(strategy, info)
    poison[0] = True
    saved = []

    def save(step: int, tokens_seen: int, progress: dict[str, Any]) -> Path:
        saved.append(step)
        return Path(f"step_{step}")

    batches = iter([mb for step in range(5) for mb in micro_batches(step, info)])
    try:
        run = TrainRun(
            parallel=parallel,
            loop=LOOP,
            batches=batches,
            val_batches=list,
            dist=info,
            accum_steps=LOOP.grad_accum_steps(info.world_size),
            total_steps=5,
            tracker=Tracker(),  # tracking off: a no-op
            checkpointer=SimpleNamespace(save=save, close=lambda: None),
            label="train",
        )
        run_loop(run, default_hooks(run))
    except TrainingDiverged as exc:
        return str(exc), saved
    return "", saved


def run_all() -> dict[str, Any]:
    info = init_distributed()
    return {
        strategy: {
            "skipping": run([0, NAN_STEP, 1, 2], strategy, info),
            "plain": run([0, 1, 2], strategy, info),
            "diverged": diverge(strategy, info),
        }
        for strategy in STRATEGIES
    }


@pytest.fixture(scope="module")
def ranks(tmp_path_factory, monkeypatch_module) -> list[dict[str, Any]]:
    monkeypatch_module.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path_factory.mktemp("torch-extensions")))
    return run_distributed_test(run_all, world_size=2, timeout_s=300)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_nan_step_is_skipped_without_a_trace(ranks, strategy):
    for rank in ranks:
        skipping, plain = rank[strategy]["skipping"], rank[strategy]["plain"]
        assert all(math.isnan(x) for x in skipping[1])  # only rank 0's forward was NaN: every rank skips
        good = [skipping[0], *skipping[2:]]
        assert all(math.isfinite(x) for step in good for x in step)
        assert [x for step in good for x in step] == pytest.approx(
            [x for step in plain for x in step], rel=1e-6
        )


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_bad_steps_in_a_row_stop_every_rank(ranks, strategy):
    for rank in ranks:
        message, saved = rank[strategy]["diverged"]
        assert (
            saved == [2] and "2 steps in a row" in message and "step 2" in message and "loss nan" in message
        )
