"""The one training loop that pretraining and fine-tuning share.

``run_loop(run)`` knows a ``TrainRun`` (batches, a ``ParallelModel``, a tracker, a checkpointer,
the step plan) and a list of hooks, nothing about where they came from: ``pretrain.train`` drives it
with token windows and a fresh model, ``finetune.run.finetune`` with SFT batches and a pretrained one.
The loop itself only steps: a ``LoopState`` carries the progress, and logging, validation,
checkpointing and preemption are hooks it calls at the start, after every step and at the end
(``hooks.py``; OLMo-core's callbacks). It returns the job's one result type, ``TrainResult``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import torch

from pipeline.config.train import LoopConfig
from pipeline.core.errors import InputError
from pipeline.model.attention_mask import doc_starts_indicator
from pipeline.model.loss import IGNORE_INDEX
from pipeline.parallel.base import ParallelModel
from pipeline.parallel.dist import DistInfo, all_reduce_sum
from pipeline.train.data import Batch, ValBatch
from pipeline.train.tracking import Tracker

ALL_SOURCES = "all"
"""The source of validation batches that carry none (fine-tuning's)."""


class TrainingDiverged(ValueError):
    """``train.max_bad_steps`` steps in a row had a non-finite loss or gradient norm (raised on every
    rank)."""


@dataclass(frozen=True)
class TrainEval:
    """Pretraining's ``data.train_eval_windows``: the final weights' loss on training windows the run has
    seen, the train side of a train/val gap that compares across runs (``hooks.ValidationHook``)."""

    samples: int
    """The first this many global training samples; a run that took fewer evaluates those it took."""
    batches: Callable[[int], Iterable[ValBatch]]
    """This rank's batches of the windows of the first n global samples (``TokenLoader.seen_subset``)."""
    sources: Sequence[str]
    """The training sources, the same list on every rank (``validate``)."""


class StepCheckpointer(Protocol):
    """Writes the checkpoint of a step (``checkpoint.RunCheckpointer``); returns its path.
    ``progress``: what a resumed run needs to report as an uninterrupted one would (first losses).
    ``close`` waits for a write in flight."""

    def save(self, step: int, tokens_seen: int, progress: dict[str, Any]) -> Path: ...

    def close(self) -> None: ...


@dataclass
class TrainRun:
    """Everything one training job runs with, built by the job (``pretrain``, ``finetune``)."""

    parallel: ParallelModel
    loop: LoopConfig
    dist: DistInfo
    batches: Iterator[Batch]
    """This rank's micro-batches (``iter(loader)``)."""
    val_batches: Callable[[], Iterable[ValBatch | Batch]]
    """A fresh pass over this rank's validation batches."""
    tracker: Tracker
    checkpointer: StepCheckpointer
    total_steps: int
    accum_steps: int
    """Micro-batches per optimizer step on each rank."""
    label: str = "train"
    """The first word of every printed line (``train``, ``finetune``)."""
    val_sources: Sequence[str] = (ALL_SOURCES,)
    data_report: Callable[[], dict[str, dict]] | None = None
    """The loader's per-source draw (pretraining's mixture record), logged and kept in the result."""
    train_eval: TrainEval | None = None
    started: float = field(default_factory=time.perf_counter)

    def say(self, line: str) -> None:
        """Print one line of the training log (rank 0 only)."""
        if self.dist.is_main:
            print(f"{self.label} {line}", flush=True)


@dataclass
class LoopState:
    """The loop's progress; hooks read it and fill in what they measure."""

    step: int = 0
    tokens_seen: int = 0
    first_train_loss: float = math.nan
    last_train_loss: float = math.nan
    initial_val_loss: float | None = None
    final_val_loss: float | None = None
    final_train_eval_loss: float | None = None
    train_seconds: float = 0.0
    """Time in training steps only (validation and checkpoints excluded): the throughput's denominator."""
    bad_in_a_row: int = 0
    skipped_steps: int = 0
    loss: float = math.nan
    """The step just taken: its loss, gradient norm, learning rate, tokens and seconds."""
    grad_norm: float = math.nan
    lr: float = 0.0
    step_tokens: int = 0
    step_seconds: float = 0.0
    checkpoint: Path | None = None
    """The checkpoint written after the current step (or the final one), if any."""
    resumed: bool = False
    val_loss: float | None = None
    val_step: int = -1
    """The latest validation loss and the step it was measured after."""
    best_val_loss: float | None = None
    evals_since_best: int = 0
    """Validations since the best one (``hooks.EarlyStopHook``)."""
    stop: str = ""
    """Set by a hook to end the run after this step; says why (early stopping)."""
    signalled: bool = False
    """Some rank had been told to stop (``Hook.signalled``) by the time this step reduced its loss."""

    @classmethod
    def resuming(cls, meta: dict[str, Any] | None) -> LoopState:
        """A fresh state, or one continuing after a checkpoint's
        step, reporting as the uninterrupted run would."""
        if meta is None:
            return cls()
        progress = meta["progress"]
        return cls(
            step=meta["step"],
            tokens_seen=meta["tokens_seen"],
            initial_val_loss=progress.get("initial_val_loss"),
            first_train_loss=progress.get("first_train_loss", math.nan),
            resumed=True,
            best_val_loss=progress.get("best_val_loss"),
            evals_since_best=progress.get("evals_since_best", 0),
        )

    @property
    def step_ok(self) -> bool:
        return math.isfinite(self.loss) and math.isfinite(self.grad_norm)

    def progress(self) -> dict[str, Any]:
        """What a checkpoint keeps for a resumed run to report (and stop early) as this one would, and
        the validation loss of its own step, if measured (``checkpoint.keep_best``)."""
        return {
            "initial_val_loss": self.initial_val_loss,
            "first_train_loss": self.first_train_loss,
            "best_val_loss": self.best_val_loss,
            "evals_since_best": self.evals_since_best,
            "val_loss": self.val_loss if self.val_step == self.step else None,
        }

    def validated(self, step: int, loss: float | None) -> None:
        """Record a validation after ``step``, and whether it is the best so far."""
        self.val_loss, self.val_step = loss, step
        if loss is None:
            return
        if self.best_val_loss is None or loss < self.best_val_loss:
            self.best_val_loss, self.evals_since_best = loss, 0
        else:
            self.evals_since_best += 1


class Hook:
    """Something the loop calls at the start, after every optimizer step, and at the end; all no-ops here."""

    def on_start(self, run: TrainRun, state: LoopState) -> None:
        """Before the first step (also when resuming)."""

    def on_step(self, run: TrainRun, state: LoopState) -> None:
        """After step ``state.step`` (skipped or not)."""

    def on_end(self, run: TrainRun, state: LoopState) -> None:
        """After the last step."""

    def signalled(self) -> bool:
        """Whether this rank has been told to stop (``hooks.PreemptionHook``: a SIGTERM). Asked during each
        step, whose one reduction ORs it over ranks into ``state.signalled``: every rank learns it at the
        same step, without a collective or host sync of its own."""
        return False


@dataclass
class TrainResult:
    """What a training or fine-tuning job reports; rank 0 writes it as ``result.json``."""

    steps: int
    tokens_seen: int
    first_train_loss: float
    last_train_loss: float
    initial_val_loss: float | None
    final_val_loss: float | None
    final_val_ppl: float | None
    final_train_eval_loss: float | None
    """The final weights' loss on the first ``data.train_eval_windows`` training samples; None when off."""
    n_params: int
    """Non-embedding parameters (N)."""
    n_params_total: int
    world_size: int
    strategy: str
    tokens_per_s: float
    """Training throughput over all ranks, evaluation and checkpointing excluded."""
    seconds: float
    checkpoint: str
    mlflow_run_id: str | None
    data: dict[str, dict] | None = None
    """Pretraining: per source, samples and tokens drawn,
    its weight, epochs and repeats (the mixture record)."""

    @classmethod
    def of(cls, run: TrainRun, state: LoopState, data: dict[str, dict] | None) -> TrainResult:
        final = state.final_val_loss
        return cls(
            steps=state.step,
            tokens_seen=state.tokens_seen,
            first_train_loss=state.first_train_loss,
            last_train_loss=state.last_train_loss,
            initial_val_loss=state.initial_val_loss,
            final_val_loss=final,
            final_val_ppl=None if final is None else math.exp(final),
            final_train_eval_loss=state.final_train_eval_loss,
            n_params=run.parallel.n_params,
            n_params_total=run.parallel.n_params_total,
            world_size=run.dist.world_size,
            strategy=run.parallel.strategy,
            tokens_per_s=state.tokens_seen / state.train_seconds if state.train_seconds else 0.0,
            seconds=time.perf_counter() - run.started,
            checkpoint=str(state.checkpoint),
            mlflow_run_id=run.tracker.run_id,
            data=data,
        )

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")
        return path


def run_loop(run: TrainRun, hooks: Sequence[Hook], *, resume: dict[str, Any] | None = None) -> TrainResult:
    """``run.total_steps`` optimizer steps, the hooks called around each (``hooks.default_hooks``).

    ``resume`` (a checkpoint's meta) continues after its step. A hook may end the run early
    (``state.stop``): the end hooks then validate and checkpoint that step. A step with a non-finite
    loss or gradient norm is skipped (its data consumed, MLflow ``skipped_steps`` counts them);
    ``loop.max_bad_steps`` in a row write a checkpoint (the last good weights, the loader past the bad
    data) and raise ``TrainingDiverged``."""
    state = LoopState.resuming(resume)
    for hook in hooks:
        hook.on_start(run, state)
    for step in range(state.step + 1, run.total_steps + 1):
        state.step, state.checkpoint = step, None
        take_step(run, state, signalled=lambda: any(hook.signalled() for hook in hooks))
        for hook in hooks:
            hook.on_step(run, state)
        if state.stop:
            run.say(state.stop)
            break
    for hook in hooks:
        hook.on_end(run, state)
    data = run.data_report() if run.data_report is not None else None
    if data is not None:
        repeated = {source: entry["repeats"] for source, entry in data.items() if entry["repeats"]}
        if repeated:
            run.say("data repeated: " + ", ".join(f"{s} {n}x" for s, n in repeated.items()))
    return TrainResult.of(run, state, data)


def take_step(run: TrainRun, state: LoopState, *, signalled: Callable[[], bool] = lambda: False) -> None:
    """One optimizer step of ``run`` recorded in ``state``; a skipped one is counted, and the
    ``max_bad_steps``-th in a row checkpoints and raises ``TrainingDiverged``. ``signalled``: this
    rank's stop flag (the hooks'), ORed over ranks into ``state.signalled`` (``step_stats``)."""
    tick = time.perf_counter()
    state.lr = run.parallel.lr
    micro_batches = [next(run.batches) for _ in range(run.accum_steps)]
    state.loss, state.grad_norm, state.signalled = step_stats(
        run.parallel, micro_batches, dist=run.dist, signalled=signalled
    )
    state.step_tokens = sum(batch[0].numel() for batch in micro_batches) * run.parallel.dp_size
    state.step_seconds = time.perf_counter() - tick
    state.tokens_seen += state.step_tokens
    state.train_seconds += state.step_seconds
    if state.step_ok:
        state.bad_in_a_row, state.last_train_loss = 0, state.loss
        if math.isnan(state.first_train_loss):
            state.first_train_loss = state.loss
        return
    state.bad_in_a_row, state.skipped_steps = state.bad_in_a_row + 1, state.skipped_steps + 1
    run.tracker.log_metrics({"skipped_steps": state.skipped_steps}, step=state.step)
    run.say(
        f"step {state.step:>5}/{run.total_steps}  skipped: loss {state.loss}  grad {state.grad_norm}  "
        f"({state.bad_in_a_row}/{run.loop.max_bad_steps} in a row)"
    )
    if state.bad_in_a_row >= run.loop.max_bad_steps:
        saved = run.checkpointer.save(state.step, state.tokens_seen, state.progress())
        raise TrainingDiverged(
            f"{run.label} diverged: {state.bad_in_a_row} steps in a row with a non-finite loss or "
            f"gradient norm, the last at step {state.step} (loss {state.loss}, grad norm {state.grad_norm}); "
            f"the last good weights are in {saved}"
        )


class StepStats(NamedTuple):
    """What one optimizer step read back from the device, all in one host sync (``step_stats``)."""

    loss: float
    """The global mean loss per target token."""
    grad_norm: float
    """The pre-clip gradient norm; NaN when a non-finite loss skipped the step before it mattered."""
    signalled: bool
    """Some rank's ``signalled`` was true (``Hook.signalled``)."""


def train_step(parallel: ParallelModel, micro_batches: list[Batch], *, dist: DistInfo) -> tuple[float, float]:
    """One optimizer step over this rank's micro-batches; returns (global mean loss, gradient norm).
    The loop's ``step_stats`` without a stop flag to share."""
    loss, grad_norm, _ = step_stats(parallel, micro_batches, dist=dist)
    return loss, grad_norm


def step_stats(
    parallel: ParallelModel,
    micro_batches: list[Batch],
    *,
    dist: DistInfo,
    signalled: Callable[[], bool] = lambda: False,
) -> StepStats:
    """One optimizer step over this rank's micro-batches, and ``signalled`` ORed over ranks.

    Each micro-batch's summed loss is divided by the target count of the whole global batch
    (all ranks, all micro-batches), so every target token weighs the same however the batch
    is split (SFT batches hold different numbers of response tokens).

    The host reads the device once (issue 20: it read it 5-6 times a step, each a sync on a GPU): the
    target count, summed loss, flags and gradient norm in one ``tolist()`` after the backward, everything
    before it queued without waiting (the target count is reduced and divides the loss on the device).
    That one read comes before the update, not just on log steps, because what follows it is the host's
    decision: a non-finite loss or gradient norm (the same on every rank: both are global) skips the step,
    gradients dropped, no update and no advance of the host-side LR schedule (``ParallelModel.skip_step``),
    and ``take_step`` counts it, logs it and stops a diverging run at that very step.
    """
    moved = [on_device(batch, dist.device) for batch in micro_batches]
    local_targets = torch.stack([(targets != IGNORE_INDEX).sum() for _, targets, _ in moved]).sum()
    global_targets = all_reduce_sum(local_targets.reshape(1), device=dist.device)
    # The strategy averages gradients over ranks. A batch without targets makes this inf, and its loss NaN,
    # refused below before any update. (full_like / x, not world_size / x: a tensor's rdiv multiplies by a
    # reciprocal, which would round the scale differently from the division.)
    scale = (torch.full_like(global_targets, float(dist.world_size)) / global_targets).reshape(())
    loss_sum = torch.zeros(1, dtype=torch.float64, device=dist.device)
    for i, (inputs, targets, starts) in enumerate(moved):
        with parallel.accumulate(sync=i == len(moved) - 1):
            _, loss = parallel(inputs, targets, reduction="sum", doc_starts=starts)
            parallel.backward(loss * scale.to(loss.dtype))
        loss_sum += loss.detach()
    grad_norm = parallel.grad_norm()  # None: the strategy measures it in its own step (ZeRO)
    sums = all_reduce_sum(torch.cat([loss_sum, torch.full_like(loss_sum, float(signalled()))]), dist.device)
    norms = [] if grad_norm is None else [grad_norm.reshape(1).to(dist.device, torch.float64)]  # CPU: offload
    unread = [sums, global_targets, *norms]
    loss_total, signals, target_count, *norm = torch.cat(unread).tolist()  # the step's one host sync
    if target_count == 0:
        raise InputError("a training batch has no target tokens (every label is ignored)")
    mean_loss, any_signal = loss_total / target_count, signals > 0
    if not math.isfinite(mean_loss):
        parallel.skip_step()
        return StepStats(mean_loss, math.nan, any_signal)
    if grad_norm is None:
        return StepStats(mean_loss, parallel.step(), any_signal)  # step() itself skips a non-finite norm
    if math.isfinite(norm[0]):
        parallel.update(grad_norm)
    else:
        parallel.skip_step()
    return StepStats(mean_loss, norm[0], any_signal)


def on_device(batch: Batch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """A micro-batch's (inputs, targets, document-start mask or None) on ``device``; a third item of the
    batch (document starts) becomes the attention mask that keeps documents apart."""
    inputs, targets, *doc_starts = batch
    starts = (
        doc_starts_indicator(doc_starts[0], (inputs.shape[0], inputs.shape[1])).to(device, non_blocking=True)
        if doc_starts
        else None
    )
    return inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True), starts


@torch.no_grad()
def validate(
    parallel: ParallelModel,
    batches: Iterable[ValBatch | Batch],
    *,
    dist: DistInfo,
    sources: Sequence[str] = (ALL_SOURCES,),
) -> tuple[float | None, dict[str, float]]:
    """Mean loss per target token over every rank's batches, overall and per source; (None, {}) when
    there are none. Batches are ``ValBatch``es tagged with one of ``sources``, or plain (inputs,
    targets), which count as ``all``. ``sources`` is the same list on every rank, so the all-reduce
    matches even when a rank has no batch of some source."""
    index = {name: i for i, name in enumerate(sources)}
    sums = [0.0] * (2 * len(sources))
    for batch in batches:
        if isinstance(batch, ValBatch):
            source, inputs, targets = batch
        else:
            source, inputs, targets = ALL_SOURCES, batch[0], batch[1]
        inputs, targets = inputs.to(dist.device), targets.to(dist.device)
        i = index[source]
        sums[2 * i] += float(parallel.eval_loss(inputs, targets))
        sums[2 * i + 1] += int((targets != IGNORE_INDEX).sum())
    totals = all_reduce_sum(sums, device=dist.device).tolist()
    by_source = {name: totals[2 * i] / totals[2 * i + 1] for name, i in index.items() if totals[2 * i + 1]}
    loss_sum, count = sum(totals[0::2]), sum(totals[1::2])
    return (loss_sum / count if count else None), by_source
