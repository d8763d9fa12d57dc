"""Host syncs of the training loop, counted on the CPU.

On a GPU every read of a device value on the host (``.item()``, ``float(t)``, ``bool(t)``, ``.tolist()``)
waits for all the work queued before it, so the GPU idles while the host launches what comes next. The
loop reads once per step: the loss, the gradient norm, the target count and the preemption flags in one
``tolist()`` (``train.loop.train_step``). The CPU runs the same calls, so counting them here measures it
(reads of the CPU-side batches, which are no device syncs on a GPU, would be counted too: there are none).
"""

from __future__ import annotations

import math
import os
import signal
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from pipeline.config.model import ModelConfig
from pipeline.config.train import LoopConfig
from pipeline.core.errors import InputError
from pipeline.model.loss import IGNORE_INDEX
from pipeline.model.transformer import build_model
from pipeline.parallel.dist import DistInfo, init_distributed, shutdown_distributed
from pipeline.parallel.registry import parallelize
from pipeline.train.hooks import default_hooks
from pipeline.train.loop import Hook, LoopState, TrainRun, run_loop, train_step
from pipeline.train.preemption import Preempted, PreemptionWatch
from pipeline.train.tracking import Tracker

ARGS = ModelConfig(size="tiny", seq_len=16).args(vocab_size=101)
LOOP = LoopConfig(global_batch_size=8, micro_batch_size=2, warmup_steps=2, log_interval=100, eval_interval=0)
STEPS = 5
"""Steps 1 and 5 log; steps 2-4 are the counted non-log steps."""


class HostReads(TorchDispatchMode):
    """Counts, between ``start`` and ``stop``, the reads of a tensor's values on the host
    (``_local_scalar_dense`` is what ``item``, ``float``, ``int`` and ``bool`` of a tensor run; ``tolist``
    bypasses dispatch, so it is patched) and the loop's collectives (``torch.distributed.all_reduce``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        super().__init__()
        self.on, self.counts = False, Counter[str]()
        tolist, all_reduce = torch.Tensor.tolist, torch.distributed.all_reduce

        def counted_tolist(tensor: torch.Tensor) -> Any:
            self.count("read")
            return tolist(tensor)

        def counted_all_reduce(*args: Any, **kwargs: Any) -> Any:
            self.count("all_reduce")
            return all_reduce(*args, **kwargs)

        monkeypatch.setattr(torch.Tensor, "tolist", counted_tolist)
        monkeypatch.setattr(torch.distributed, "all_reduce", counted_all_reduce)

    def start(self) -> None:
        """Dispatch through this mode only while counting: it slows every op down."""
        self.on = True
        self.__enter__()

    def stop(self) -> None:
        if self.on:
            self.on = False
            self.__exit__(None, None, None)

    def count(self, kind: str) -> None:
        if self.on:
            self.counts[kind] += 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count("read")
        return func(*args, **(kwargs or {}))


class CountBetween(Hook):
    """Last of the hooks: counts from the end of step ``first - 1`` to the end of step ``last``, so
    the counted steps include everything every hook does after them."""

    def __init__(self, reads: HostReads, first: int, last: int):
        self.reads, self.first, self.last = reads, first, last

    def on_step(self, run: TrainRun, state: LoopState) -> None:
        if state.step == self.first - 1:
            self.reads.start()
        elif state.step == self.last:
            self.reads.stop()


def batches(info: DistInfo) -> Any:
    generator = torch.Generator().manual_seed(info.rank)
    while True:
        tokens = torch.randint(
            0, ARGS.vocab_size, (LOOP.micro_batch_size, ARGS.seq_len + 1), generator=generator
        )
        yield tokens[:, :-1], tokens[:, 1:].clone()


def training_run(strategy: str, info: DistInfo, saved: list[int]) -> TrainRun:
    torch.manual_seed(0)
    parallel = parallelize(build_model(ARGS), strategy=strategy, dist=info, loop=LOOP, total_steps=STEPS)

    def save(step: int, tokens_seen: int, progress: dict[str, Any]) -> Path:
        saved.append(step)
        return Path(f"step_{step}")

    return TrainRun(
        parallel=parallel,
        loop=LOOP,
        dist=info,
        batches=batches(info),
        val_batches=list,
        tracker=Tracker(),  # tracking off: a no-op
        checkpointer=SimpleNamespace(save=save, close=lambda: None),  # type: ignore[arg-type]
        total_steps=STEPS,
        accum_steps=LOOP.grad_accum_steps(info.world_size),
    )


@pytest.fixture(params=["ddp", "fsdp"])
def info(request) -> Any:
    """ddp in one process has no process group; fsdp gets a group of one rank (its collectives are real)."""
    info = init_distributed("gloo", strategy=request.param)
    yield request.param, info
    shutdown_distributed(info)


def test_a_step_that_does_not_log_reads_the_device_once(info, monkeypatch):
    strategy, dist = info
    reads = HostReads(monkeypatch)
    run = training_run(strategy, dist, saved := [])
    with PreemptionWatch() as watch:
        try:
            result = run_loop(run, [*default_hooks(run, preemption=watch), CountBetween(reads, 2, STEPS - 1)])
        finally:
            reads.stop()
    counted = STEPS - 2
    assert reads.counts["read"] == counted  # one per step: loss, grad norm and flags read together
    # The target count (before the forward, for the loss scale) and the step's sums: two collectives,
    # neither read on the host by itself. Without a process group there are none.
    assert reads.counts["all_reduce"] == (2 * counted if torch.distributed.is_initialized() else 0)
    assert result.steps == STEPS and math.isfinite(result.last_train_loss) and saved == [STEPS]


def test_a_signal_during_a_step_stops_the_run_at_the_end_of_the_next(monkeypatch):
    """The flags are read with the next step's loss: a signal after step 3's read (here: in its hooks)
    stops the run after step 4, which is checkpointed; without the signal the run goes on."""
    dist = DistInfo()
    run = training_run("ddp", dist, saved := [])

    class SignalAt(Hook):
        def on_step(self, run: TrainRun, state: LoopState) -> None:
            if state.step == 3:
                os.kill(os.getpid(), signal.SIGUSR2)

    with PreemptionWatch() as watch, pytest.raises(Preempted) as stopped:
        run_loop(run, [SignalAt(), *default_hooks(run, preemption=watch)])
    assert stopped.value.step == 4 and saved == [4] and "SIGUSR2" in str(stopped.value)


def test_a_batch_without_targets_is_refused_before_any_update():
    dist = DistInfo()
    parallel = parallelize(build_model(ARGS), strategy="ddp", dist=dist, loop=LOOP, total_steps=STEPS)
    before = [p.detach().clone() for p in parallel.model.parameters()]
    inputs, targets = next(batches(dist))
    with pytest.raises(InputError, match="no target tokens"):
        train_step(parallel, [(inputs, torch.full_like(targets, IGNORE_INDEX))], dist=dist)
    assert all(torch.equal(a, b) for a, b in zip(parallel.model.parameters(), before))
    assert parallel.scheduler.last_epoch == 0
