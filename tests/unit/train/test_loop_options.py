"""Loop options in one process: non-finite steps skipped then a stop, WSD, fused AdamW choice,
activation checkpointing and torch.compile giving the same numbers as the plain model."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from pipeline.config.model import ModelConfig
from pipeline.config.train import LoopConfig
from pipeline.model.transformer import build_model
from pipeline.parallel.base import ParallelModel
from pipeline.parallel.dist import DistInfo
from pipeline.parallel.optim import build_optimizer, lr_factor, use_fused
from pipeline.parallel.registry import parallelize
from pipeline.train.hooks import default_hooks
from pipeline.train.loop import Hook, LoopState, TrainingDiverged, TrainRun, run_loop, train_step

ARGS = ModelConfig(size="tiny", seq_len=16).args(vocab_size=101)


def batch(seed: int, size: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.randint(
        0, ARGS.vocab_size, (size, ARGS.seq_len + 1), generator=torch.Generator().manual_seed(seed)
    )
    return tokens[:, :-1], tokens[:, 1:].clone()


def build(**loop: Any) -> ParallelModel:
    torch.manual_seed(0)
    return parallelize(
        build_model(ARGS), strategy="ddp", dist=DistInfo(), loop=LoopConfig(**loop), total_steps=10
    )


@contextlib.contextmanager
def nan_forward(parallel: ParallelModel):
    """Test-only fault: the final norm's output becomes NaN, so loss and every gradient are NaN."""
    handle = parallel.model.norm.register_forward_hook(lambda _m, _i, out: out * math.nan)
    try:
        yield
    finally:
        handle.remove()


def weights(parallel: ParallelModel) -> list[torch.Tensor]:
    return [p.detach().clone() for p in parallel.model.parameters()]


# -- non-finite steps -------------------------------------------------------------------------------


def test_nan_loss_skips_the_update_and_leaves_no_trace():
    """good, NaN, good == good, good: no weight, Adam state or schedule change from the skipped step."""
    skipping, plain = build(), build()
    info = DistInfo()
    assert train_step(skipping, [batch(0)], dist=info) == train_step(plain, [batch(0)], dist=info)
    before, lr = weights(skipping), skipping.lr
    with nan_forward(skipping):
        loss, norm = train_step(skipping, [batch(99)], dist=info)
    assert math.isnan(loss) and math.isnan(norm)
    assert all(torch.equal(a, b) for a, b in zip(weights(skipping), before)) and skipping.lr == lr
    assert all(p.grad is None for p in skipping.model.parameters())
    assert train_step(skipping, [batch(1)], dist=info) == train_step(plain, [batch(1)], dist=info)
    assert all(torch.equal(a, b) for a, b in zip(weights(skipping), weights(plain)))


def test_inf_gradient_norm_with_a_finite_loss_is_skipped():
    parallel = build()
    before = weights(parallel)
    handle = parallel.model.layers[0].attention.wq.weight.register_hook(lambda grad: grad * math.inf)
    loss, norm = train_step(parallel, [batch(0)], dist=DistInfo())
    handle.remove()
    assert math.isfinite(loss) and not math.isfinite(norm)
    assert all(torch.equal(a, b) for a, b in zip(weights(parallel), before))
    assert parallel.scheduler.last_epoch == 0  # the schedule did not advance


class Recorder:
    """The tracker and checkpoint callback of ``run_loop``, remembering what they were given."""

    system_metrics = False
    run_id = None

    def __init__(self, parallel: ParallelModel):
        self.parallel, self.metrics, self.saved = parallel, [], {}

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.metrics.append((step, metrics))

    def drain(self) -> None:
        """Nothing is queued: ``log_metrics`` keeps each call at once."""

    def save(self, step: int, tokens_seen: int, progress: dict[str, Any]) -> Path:
        self.saved[step] = (tokens_seen, weights(self.parallel))
        return Path(f"step_{step}")


def loop_with_faults(bad: set[int], *, max_bad_steps: int, steps: int, capsys) -> tuple[Recorder, Any, str]:
    """``run_loop`` over ``steps`` one-batch steps whose forward is NaN at the (1-based) steps ``bad``."""
    parallel = build(max_bad_steps=max_bad_steps)
    recorder = Recorder(parallel)
    served = []

    def batches():
        for i in range(steps):
            served.append(i)
            yield batch(i)

    forwards = []

    def fault(
        _module, _inputs, out
    ):  # one micro-batch per step and no validation: the n-th forward is step n
        forwards.append(1)
        return out * math.nan if len(forwards) in bad else out

    parallel.model.norm.register_forward_hook(fault)
    outcome: Any
    try:
        run = TrainRun(
            parallel,
            loop=LoopConfig(max_bad_steps=max_bad_steps, log_interval=1),
            batches=batches(),
            val_batches=list,
            dist=DistInfo(),
            accum_steps=1,
            total_steps=steps,
            tracker=recorder,
            checkpointer=recorder,
            label="train",
        )
        outcome = run_loop(run, default_hooks(run))
    except TrainingDiverged as exc:
        outcome = exc
    return recorder, (outcome, served), capsys.readouterr().out


def test_bad_steps_are_skipped_counted_and_the_run_continues(capsys):
    recorder, (outcome, served), out = loop_with_faults({2, 4, 5}, max_bad_steps=3, steps=6, capsys=capsys)
    assert outcome.steps == 6 and served == list(range(6))  # bad batches consumed, not retried
    skipped = [(step, m["skipped_steps"]) for step, m in recorder.metrics if "skipped_steps" in m]
    assert skipped == [(2, 1), (4, 2), (5, 3)]
    assert out.count("skipped: loss nan") == 3 and "(2/3 in a row)" in out
    assert math.isfinite(outcome.last_train_loss) and math.isfinite(outcome.first_train_loss)


def test_max_bad_steps_in_a_row_checkpoint_the_last_good_state_and_stop(capsys):
    recorder, (error, served), out = loop_with_faults({3, 4, 5}, max_bad_steps=3, steps=8, capsys=capsys)
    assert isinstance(error, TrainingDiverged) and isinstance(error, ValueError)
    message = str(error)
    assert "(3/3 in a row)" in out
    assert "\n" not in message and "step 5" in message and "loss nan" in message and "step_5" in message
    assert served == list(range(5))
    assert list(recorder.saved) == [5]
    tokens_seen, saved = recorder.saved[5]
    assert tokens_seen == 5 * 4 * ARGS.seq_len
    # the last good state is step 2's: replay two good steps on a fresh model
    fresh, info = build(), DistInfo()
    for i in range(2):
        train_step(fresh, [batch(i)], dist=info)
    assert all(torch.equal(a, b) for a, b in zip(saved, weights(fresh)))


# -- schedule and optimizer -------------------------------------------------------------------------


def test_wsd_warms_up_holds_then_decays_linearly_over_the_last_fraction():
    factor = lambda step: lr_factor(
        step, warmup_steps=10, total_steps=100, min_lr_ratio=0.1, schedule="wsd", decay_fraction=0.2
    )
    assert [factor(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert all(factor(s) == 1.0 for s in range(10, 81))  # stable until the last 20 steps
    assert factor(90) == pytest.approx(1.0 - 0.9 * 0.5)
    assert factor(100) == pytest.approx(0.1) and factor(150) == pytest.approx(0.1)
    decay = [factor(s) for s in range(80, 101)]
    assert decay == pytest.approx([1.0 - 0.9 * i / 20 for i in range(21)])


def test_the_schedule_option_reaches_the_scheduler():
    lrs = {}
    for schedule in ("cosine", "wsd"):
        parallel = build(schedule=schedule, warmup_steps=0, lr=1.0, min_lr_ratio=0.0, decay_fraction=0.5)
        for _ in range(2):
            parallel.optimizer.step()
            parallel.scheduler.step()
        lrs[schedule] = parallel.lr  # step 2 of 10
    assert lrs["wsd"] == 1.0 and lrs["cosine"] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.2)))


def test_fused_adamw_follows_the_parameter_device():
    assert build_optimizer(build_model(ARGS, device="cpu"), LoopConfig()).defaults["fused"] is True
    cuda, cpu, meta = (SimpleNamespace(device=torch.device(t)) for t in ("cuda", "cpu", "meta"))
    assert use_fused([cuda, cuda]) and use_fused([cpu]) and not use_fused([cpu, meta])


# -- activation checkpointing and compile -----------------------------------------------------------


def two_steps(parallel: ParallelModel) -> tuple[list[tuple[float, float]], list[torch.Tensor]]:
    return [train_step(parallel, [batch(i)], dist=DistInfo()) for i in range(2)], weights(parallel)


def test_activation_checkpointing_recomputes_blocks_with_the_same_numbers():
    plain, checkpointed = build(), build(activation_checkpointing=True)
    calls = []
    checkpointed.model.layers[0].feed_forward.w1.register_forward_hook(lambda *_: calls.append(1))
    inputs, targets = batch(0)
    for parallel in (plain, checkpointed):
        parallel(inputs, targets)[1].backward()
    assert len(calls) == 2  # forward, then the recomputation in backward
    grads = [(a.grad, b.grad) for a, b in zip(plain.model.parameters(), checkpointed.model.parameters())]
    assert all(torch.allclose(a, b, rtol=1e-6, atol=1e-8) for a, b in grads)
    plain.skip_step(), checkpointed.skip_step()
    (plain_losses, plain_w), (ckpt_losses, ckpt_w) = two_steps(plain), two_steps(checkpointed)
    assert [x for step in ckpt_losses for x in step] == pytest.approx(
        [x for step in plain_losses for x in step], rel=1e-6
    )
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(ckpt_w, plain_w))
    assert [n for n, _ in checkpointed.model.named_parameters()] == [
        n for n, _ in plain.model.named_parameters()
    ]


def inductor_available() -> bool:
    return shutil.which(os.environ.get("CXX", "g++")) is not None


@pytest.mark.slow
@pytest.mark.skipif(
    not inductor_available(), reason="torch.compile's inductor needs a C++ compiler (PLATFORM.md §6)"
)
def test_compiled_blocks_match_eager(tmp_path, monkeypatch):
    monkeypatch.setenv(
        "TORCHINDUCTOR_CACHE_DIR", str(Path(os.environ.get("TORCHINDUCTOR_CACHE_DIR", tmp_path)))
    )
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    eager, compiled = build(), build(compile=True, activation_checkpointing=True)
    assert all(block._compiled_call_impl is not None for block in compiled.model.layers)
    (eager_losses, eager_w), (compiled_losses, compiled_w) = two_steps(eager), two_steps(compiled)
    for (loss, norm), (c_loss, c_norm) in zip(eager_losses, compiled_losses):
        assert abs(loss - c_loss) <= 1e-5 and abs(norm - c_norm) <= 1e-4 * norm
    # per tensor, as in test_strategies: Adam's m / sqrt(v) magnifies rounding where a gradient is near 0
    assert max(float((a - b).norm() / b.norm()) for a, b in zip(compiled_w, eager_w)) <= 1e-4
    counters = torch._dynamo.utils.counters
    assert (
        counters["stats"]["unique_graphs"] >= 1 and not counters["graph_break"]
    )  # compiled, checkpoint included


def test_the_loop_calls_each_hook_around_every_step_and_returns_one_result():
    """The loop only steps; what else happens is a hook's (logging, validation, checkpoints, preemption)."""
    parallel = build()
    recorder = Recorder(parallel)
    calls = []

    class Probe(Hook):
        def on_start(self, run: TrainRun, state: LoopState) -> None:
            calls.append(("start", state.step))

        def on_step(self, run: TrainRun, state: LoopState) -> None:
            calls.append(("step", state.step, state.tokens_seen))

        def on_end(self, run: TrainRun, state: LoopState) -> None:
            calls.append(("end", state.step))
            state.checkpoint = Path("probe")

    run = TrainRun(
        parallel,
        loop=LoopConfig(),
        batches=(batch(i) for i in range(3)),
        val_batches=list,
        dist=DistInfo(),
        accum_steps=1,
        total_steps=3,
        tracker=recorder,
        checkpointer=recorder,
    )
    result = run_loop(run, [Probe()])
    tokens = 4 * ARGS.seq_len
    assert calls == [
        ("start", 0),
        ("step", 1, tokens),
        ("step", 2, 2 * tokens),
        ("step", 3, 3 * tokens),
        ("end", 3),
    ]
    assert (result.steps, result.tokens_seen, result.checkpoint) == (3, 3 * tokens, "probe")
    assert not recorder.metrics and not recorder.saved  # no hooks of logging or checkpoints given
