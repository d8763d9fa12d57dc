"""What the training loop does besides stepping, as hooks it calls (OLMo-core's callbacks).

``default_hooks`` gives a job's set, in the order they run after each step: the train log (metrics
and one printed line every ``log_interval`` steps), validation (at the start of a fresh run, every
``eval_interval`` steps and at the end, then the final weights on seen training windows with
``data.train_eval_windows``), downstream multiple-choice accuracy (``train.eval_tasks``, on
validation's cadence, ``downstream.py``), early stopping (``train.early_stop_patience``), checkpoints
(every ``checkpoint.interval`` steps and at the end) and preemption (a SIGTERM/SIGUSR2 on any rank:
checkpoint this step, then ``Preempted``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

from pipeline.train.data import Batch, ValBatch
from pipeline.train.downstream import DownstreamEvalHook
from pipeline.train.loop import Hook, LoopState, TrainEval, TrainRun, validate
from pipeline.train.mfu import mfu
from pipeline.train.preemption import Preempted, PreemptionWatch
from pipeline.train.tracking import memory_metrics


class TrainLogHook(Hook):
    """Every ``interval`` steps (and the first and last): the mean loss of the good steps since the last
    log, lr, gradient norm, tokens, throughput and MFU to MLflow and as one printed line."""

    def __init__(self, interval: int, *, token_flops: float = 0.0, device_peak: float | None = None):
        self.interval, self.token_flops, self.device_peak = interval, token_flops, device_peak
        self.tokens, self.seconds, self.losses = 0, 0.0, list[float]()

    def on_step(self, run: TrainRun, state: LoopState) -> None:
        self.tokens, self.seconds = self.tokens + state.step_tokens, self.seconds + state.step_seconds
        if state.step_ok:
            self.losses.append(state.loss)
        step = state.step
        if not (step == 1 or step % self.interval == 0 or step == run.total_steps):
            return
        loss = sum(self.losses) / len(self.losses) if self.losses else math.nan
        tokens_per_s = self.tokens / self.seconds
        metrics = {
            "train/loss": loss,
            "lr": state.lr,
            "grad_norm": state.grad_norm,
            "tokens_seen": state.tokens_seen,
            "tokens_per_s": tokens_per_s,
            "mfu": mfu(tokens_per_s / run.dist.world_size, self.token_flops, self.device_peak),
        }
        if run.tracker.system_metrics:
            metrics.update(memory_metrics(run.dist.device))
        if run.data_report is not None:
            metrics.update(
                {f"data/epochs/{source}": entry["epochs"] for source, entry in run.data_report().items()}
            )
        run.tracker.log_metrics(metrics, step=step)
        run.say(
            f"step {step:>5}/{run.total_steps}  loss {loss:.4f}  lr {state.lr:.2e}  "
            f"grad {state.grad_norm:.3f}  "
            f"tokens {state.tokens_seen:,}  {tokens_per_s:,.0f} tok/s"
        )
        self.tokens, self.seconds, self.losses = 0, 0.0, []


class ValidationHook(Hook):
    """Validation loss (overall and, for a mixture, per source) before a fresh run's first step, every
    ``interval`` steps (0: none between) and after the last; logged, printed, and recorded in the state
    (the best so far: early stopping, ``checkpoint.keep_best``). After the last step, with
    ``run.train_eval``, also the loss on training windows the run has seen (``evaluate_seen``)."""

    def __init__(self, interval: int):
        self.interval = interval

    def on_start(self, run: TrainRun, state: LoopState) -> None:
        if not state.resumed:
            state.initial_val_loss = self.validate(run, 0)

    def on_step(self, run: TrainRun, state: LoopState) -> None:
        if self.interval and state.step % self.interval == 0 and state.step != run.total_steps:
            state.validated(state.step, self.validate(run, state.step))

    def on_end(self, run: TrainRun, state: LoopState) -> None:
        if state.val_step != state.step:  # an early stop has just validated this step
            state.validated(state.step, self.validate(run, state.step))
        state.final_val_loss = state.val_loss
        if run.train_eval is not None:  # the final weights only: a resumed run gets what an unbroken one does
            state.final_train_eval_loss = evaluate_seen(run, run.train_eval, state.step)

    @staticmethod
    def validate(run: TrainRun, step: int) -> float | None:
        return log_eval(run, step, "val", run.val_batches(), run.val_sources)


def evaluate_seen(run: TrainRun, train_eval: TrainEval, step: int) -> float | None:
    """The loss on the windows of the first ``train_eval.samples`` training samples; a run that stopped
    before taking that many (early stopping) is measured on those it took, which it has trained on."""
    taken = step * run.loop.batch
    samples = min(train_eval.samples, taken)
    if samples < train_eval.samples:
        run.say(
            f"train eval on the first {samples} training samples, not {train_eval.samples}: "
            f"the run stopped after step {step} and never trained on the others"
        )
    return log_eval(run, step, "train_eval", train_eval.batches(samples), train_eval.sources)


def log_eval(
    run: TrainRun, step: int, prefix: str, batches: Iterable[ValBatch | Batch], sources: Sequence[str]
) -> float | None:
    """Loss (overall and, over several sources, per source) of ``batches``: logged as ``<prefix>/loss``
    and ``<prefix>/ppl`` (``/<source>`` appended per source) and printed as one line."""
    loss, by_source = validate(run.parallel, batches, dist=run.dist, sources=sources)
    if loss is None:
        return None
    metrics = {f"{prefix}/loss": loss, f"{prefix}/ppl": math.exp(loss)}
    per_source = ""
    if len(by_source) > 1:
        for source, source_loss in by_source.items():
            metrics.update(
                {f"{prefix}/loss/{source}": source_loss, f"{prefix}/ppl/{source}": math.exp(source_loss)}
            )
        per_source = "".join(f"  {source} {value:.4f}" for source, value in by_source.items())
    run.tracker.log_metrics(metrics, step=step)
    run.say(
        f"step {step:>5}/{run.total_steps}  {prefix.replace('_', ' ')} loss {loss:.4f}  "
        f"ppl {math.exp(loss):,.2f}{per_source}"
    )
    return loss


class CheckpointHook(Hook):
    """A checkpoint every ``interval`` steps (0: none between) and after the last step."""

    def __init__(self, interval: int):
        self.interval = interval

    def on_step(self, run: TrainRun, state: LoopState) -> None:
        if self.interval and state.step % self.interval == 0 and state.step != run.total_steps:
            state.checkpoint = save_step(run, state)

    def on_end(self, run: TrainRun, state: LoopState) -> None:
        state.checkpoint = state.checkpoint or save_step(run, state)
        run.say(f"saved {state.checkpoint}")


def save_step(run: TrainRun, state: LoopState) -> Path:
    """Checkpoint ``state.step``, once the metrics logged up to it have reached the tracking store (a job
    killed after this checkpoint resumes with its MLflow history whole)."""
    run.tracker.drain()
    return run.checkpointer.save(state.step, state.tokens_seen, state.progress())


class EarlyStopHook(Hook):
    """End the run when ``patience`` validations in a row have not improved on the best validation loss
    (``train.early_stop_patience``): a small fine-tuning set overfits long before its planned steps.
    With ``checkpoint.keep_best`` the best step's checkpoint stays, whatever ``keep`` prunes."""

    def __init__(self, patience: int):
        self.patience = patience

    def on_step(self, run: TrainRun, state: LoopState) -> None:
        if state.val_step == state.step and state.evals_since_best >= self.patience:
            state.stop = (
                f"early stop after step {state.step}: val loss {state.val_loss:.4f} has not improved on "
                f"{state.best_val_loss:.4f} for {self.patience} validation(s)"
            )


class PreemptionHook(Hook):
    """When any rank got SIGTERM/SIGUSR2 (``watch``), the step in progress has finished: checkpoint it
    (unless ``CheckpointHook`` just did) and raise ``Preempted``, before the last step only.

    The ranks agree through the step's own reduction of its loss (``signalled``, ``state.signalled``), not
    a collective of their own: no extra host sync per step. The cost is latency: a signal that comes after
    a step's reduction (during its backward tail, validation or checkpoint) stops the run after the next
    step, one step later than a check at the end of each step would; Slurm signals a margin ahead."""

    def __init__(self, watch: PreemptionWatch):
        self.watch = watch

    def signalled(self) -> bool:
        return self.watch.signalled

    def on_step(self, run: TrainRun, state: LoopState) -> None:
        if state.step == run.total_steps or not state.signalled:
            return
        saved = state.checkpoint or save_step(run, state)
        raise Preempted(state.step, str(saved), self.watch.signal_name)


def default_hooks(
    run: TrainRun,
    *,
    checkpoint_interval: int = 0,
    preemption: PreemptionWatch | None = None,
    token_flops: float = 0.0,
    device_peak: float | None = None,
) -> list[Hook]:
    """A job's hooks, in the order they run: log, validation, downstream eval (if tasks are given),
    early stopping (if patience is set), checkpoints, then preemption (if watched)."""
    hooks: list[Hook] = [
        TrainLogHook(run.loop.log_interval, token_flops=token_flops, device_peak=device_peak),
        ValidationHook(run.loop.eval_interval),
        *([DownstreamEvalHook.for_run(run)] if run.loop.eval_tasks else []),
        *([EarlyStopHook(run.loop.early_stop_patience)] if run.loop.early_stop_patience else []),
        CheckpointHook(checkpoint_interval),
    ]
    if preemption is not None:
        hooks.append(PreemptionHook(preemption))
    return hooks
