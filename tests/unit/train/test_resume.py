"""Resume: a job stopped by SIGTERM checkpoints, exits for a requeue, and its rerun finishes exactly
as the uninterrupted job (same losses, same samples, same result)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from pipeline.testing import signal_after_first_checkpoint
from pipeline.train.checkpoint import newest_checkpoint, read_meta
from pipeline.train.preemption import Preempted
from pipeline.train.pretrain import train

STEPS = ["train.max_steps=8", "train.log_interval=1", "checkpoint.interval=3", "checkpoint.keep=5"]


def step_losses(output: str) -> dict[int, str]:
    """``{step: "loss 1.2345"}`` from the per-step log lines rank 0 prints."""
    return {int(m.group(1)): m.group(2) for m in re.finditer(r"train step\s+(\d+)/\d+\s+(loss \S+)", output)}


def result(output_dir: str) -> dict:
    data = json.loads((Path(output_dir) / "result.json").read_text())
    return {k: v for k, v in data.items() if k not in ("tokens_per_s", "seconds", "checkpoint")}


def test_sigterm_checkpoints_and_the_rerun_ends_as_the_uninterrupted_job(train_config, tmp_path, capsys):
    seen = "data.train_eval_windows=24"  # measured at the end on the final weights: resumed or not, the same
    whole = train_config(*STEPS, seen, f"output_dir={tmp_path / 'whole'}")
    train(whole)
    whole_losses = step_losses(capsys.readouterr().out)

    cfg = train_config(*STEPS, seen, f"output_dir={tmp_path / 'stopped'}")
    watcher = signal_after_first_checkpoint(cfg.output_dir)
    with pytest.raises(Preempted) as stop:
        train(cfg)
    watcher.join()
    stopped_at = stop.value.step
    assert 3 <= stopped_at < 8
    saved = read_meta(newest_checkpoint(cfg.output_dir))
    assert saved["step"] == stopped_at and saved["loader"]["sample_index"] == stopped_at * 8
    first = capsys.readouterr().out

    train(cfg)  # checkpoint.resume=auto (the default)
    second = capsys.readouterr().out
    assert f"resuming from {Path(cfg.output_dir) / 'checkpoints' / f'step_{stopped_at}'}" in second
    resumed = step_losses(second)
    assert sorted(resumed) == list(range(stopped_at + 1, 9))  # no step done twice, none skipped
    assert {**step_losses(first), **resumed} == whole_losses
    assert result(cfg.output_dir) == result(whole.output_dir)
    assert result(cfg.output_dir)["final_train_eval_loss"] is not None


def test_resume_never_refuses_an_output_with_checkpoints_and_a_model_change_is_refused(
    train_config, tmp_path
):
    cfg = train_config("train.max_steps=2", f"output_dir={tmp_path / 'run'}")
    train(cfg)
    with pytest.raises(ValueError, match="already has checkpoints \\(step_2\\); use checkpoint.resume=auto"):
        train(train_config("train.max_steps=4", f"output_dir={tmp_path / 'run'}", "checkpoint.resume=never"))
    with pytest.raises(ValueError, match="is of another model \\(d_model 128 vs 96"):
        train(train_config("train.max_steps=4", f"output_dir={tmp_path / 'run'}", "model.d_model=96"))


def test_resuming_on_shards_of_another_tokenizer_is_refused(train_config, tmp_path):
    from pipeline.testing import make_tiny_corpus

    train(train_config("train.max_steps=2", f"output_dir={tmp_path / 'run'}"))
    other_shards, _ = make_tiny_corpus(tmp_path / "other", docs=200, seed=1)  # same vocab size, other merges
    with pytest.raises(ValueError, match="was trained with another tokenizer than .*other"):
        train(
            train_config("train.max_steps=4", f"output_dir={tmp_path / 'run'}", f"data.shards={other_shards}")
        )


def test_a_finished_run_resumed_with_more_steps_continues(train_config, tmp_path):
    train(train_config("train.max_steps=2", f"output_dir={tmp_path / 'run'}", "train.warmup_steps=0"))
    result_more = train(
        train_config("train.max_steps=4", f"output_dir={tmp_path / 'run'}", "train.warmup_steps=0")
    )
    assert result_more.steps == 4 and result_more.tokens_seen == 4 * 8 * 64
    assert read_meta(newest_checkpoint(tmp_path / "run"))["loader"]["sample_index"] == 4 * 8


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_async_checkpoints_hold_what_blocking_ones_do_and_resume_the_same_curve(
    train_config, tmp_path, capsys, monkeypatch, strategy
):
    """checkpoint.async_save: each step directory has the weights and loader state of its own step
    (training went on while it was written), and a SIGTERM'd async run resumes as the blocking run ran."""
    from pipeline.train.checkpoint import CHECKPOINTS_DIR, AsyncCheckpointer, load_model_for_inference

    background_writes = []
    start = AsyncCheckpointer.start
    monkeypatch.setattr(
        AsyncCheckpointer, "start", lambda self, *a: (background_writes.append(1), start(self, *a))
    )
    blocking = train_config(*STEPS, f"output_dir={tmp_path / 'blocking'}", f"parallel.strategy={strategy}")
    train(blocking)
    blocking_losses = step_losses(capsys.readouterr().out)
    assert not background_writes
    cfg = train_config(
        *STEPS,
        f"output_dir={tmp_path / 'async'}",
        f"parallel.strategy={strategy}",
        "checkpoint.async_save=true",
    )
    watcher = signal_after_first_checkpoint(cfg.output_dir)
    with pytest.raises(Preempted):
        train(cfg)
    watcher.join()
    first = capsys.readouterr().out
    train(cfg)
    assert {**step_losses(first), **step_losses(capsys.readouterr().out)} == blocking_losses
    assert result(cfg.output_dir) == result(blocking.output_dir)
    steps = sorted(p.name for p in (Path(cfg.output_dir) / CHECKPOINTS_DIR).glob("step_*"))
    assert "step_8" in steps and not any(name.endswith(".tmp") for name in steps)
    assert len(background_writes) >= 3  # step_3, the SIGTERM step (or step_6), step_8
    for name in steps:
        if not (Path(blocking.output_dir) / CHECKPOINTS_DIR / name).is_dir():
            continue  # the SIGTERM step: no blocking twin
        ours, theirs = (Path(out) / CHECKPOINTS_DIR / name for out in (cfg.output_dir, blocking.output_dir))
        assert read_meta(ours)["loader"] == read_meta(theirs)["loader"]
        ours_weights = load_model_for_inference(ours)[0].state_dict()
        for key, tensor in load_model_for_inference(theirs)[0].state_dict().items():
            assert torch.equal(ours_weights[key], tensor), f"{name}: {key}"


def test_async_save_is_refused_for_zero(train_config):
    from pipeline.core.errors import ConfigError

    with pytest.raises(ConfigError, match="checkpoint.async_save: only for strategies ddp and fsdp"):
        train_config("parallel.strategy=zero2", "checkpoint.async_save=true")
