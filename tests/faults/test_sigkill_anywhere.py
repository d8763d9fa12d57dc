"""SIGKILL a 2-rank job at seeded random moments, over and over (in start-up, mid-step, while an async
checkpoint is being written, in the middle of ``checkpoint.keep`` pruning), resuming with
``checkpoint.resume=auto`` each time: after every kill each step directory there is complete and intact,
the newest never goes back, and the losses of every step any job printed, and the final result, equal
the uninterrupted run's. Nothing lost, nothing duplicated, no hang."""

from __future__ import annotations

import json
import random
import re
import time
from pathlib import Path

import pytest
from faultjobs import Job, failpoint_env, step_losses, train_command

from pipeline.train.checkpoint import CHECKPOINTS_DIR, newest_checkpoint, read_meta
from pipeline.train.step_files import CHECKSUMS_FILE, STEP_DIR, verify_checkpoint

pytestmark = [pytest.mark.faults, pytest.mark.distributed, pytest.mark.slow]

STEPS, KEEP = 24, 2
SHAPE = (
    "parallel.strategy=ddp",
    "checkpoint.async_save=true",
    "checkpoint.interval=1",
    f"checkpoint.keep={KEEP}",
    f"train.max_steps={STEPS}",
)
MODES = ["startup", "random", "write", "write", "prune"]
"""Where each kill aims, shuffled with a fixed seed; the moment within it is drawn from the same seed. Five
kills, each a 2-rank job start (~15 s of CI's 2 cores): every kind at least once, twice the one that can
miss (a "write" kill lands only if a checkpoint is still being written when it fires). A second "random"
kill cost CI ~15 s for a moment the "write" and "startup" ones already bracket."""


def test_sigkill_at_random_moments_loses_and_repeats_nothing(tiny_corpus, tmp_path):
    rng = random.Random(19)
    modes = rng.sample(MODES, len(MODES))
    whole_dir = tmp_path / "whole"
    reference = Job.start(train_command(2, tiny_corpus[0], whole_dir, *SHAPE), tmp_path / "whole.log")
    assert reference.wait() == 0, reference.output[-3000:]
    whole = step_losses(reference.output)
    assert sorted(whole) == list(range(1, STEPS + 1))

    output, printed, newest_step, seen = tmp_path / "killed", {}, 0, {"write": 0, "prune": 0}
    for attempt, mode in enumerate(modes):
        job = Job.start(
            train_command(2, tiny_corpus[0], output, *SHAPE),
            tmp_path / f"attempt{attempt}.log",
            **(failpoint_env("prune") if mode == "prune" else {}),
        )
        seen[mode] = seen.get(mode, 0) + _kill(job, mode, output, rng)
        newest_step = _check_after_kill(output, newest_step)
        _collect(job.output, printed, whole)
    assert seen["write"] >= 1 and seen["prune"] >= 1, seen  # the kills hit what they aimed at

    final = Job.start(train_command(2, tiny_corpus[0], output, *SHAPE), tmp_path / "final.log")
    assert final.wait() == 0, final.output[-3000:]
    _collect(final.output, printed, whole)
    assert sorted(printed) == list(range(1, STEPS + 1))  # every step was taken by some job
    meta = read_meta(newest_checkpoint(output, hashes=True))
    assert meta["step"] == STEPS and meta["loader"]["sample_index"] == STEPS * 8  # every sample once
    ours, theirs = (json.loads((o / "result.json").read_text()) for o in (output, whole_dir))
    for key in ("steps", "tokens_seen", "first_train_loss", "last_train_loss", "final_val_loss"):
        assert ours[key] == theirs[key], key


def _kill(job: Job, mode: str, output: Path, rng: random.Random) -> int:
    """Kill ``job`` at a moment of kind ``mode``; 1 if it was killed where aimed, else 0."""
    checkpoints = output / CHECKPOINTS_DIR
    if mode == "prune":  # the failpoint kills the job itself, in its first prune
        job.wait()
        return int(checkpoints.is_dir() and any(p.name.endswith(".pruned") for p in checkpoints.iterdir()))
    if mode == "startup":
        time.sleep(rng.uniform(0.5, 4.0))
        job.kill()
        return 1
    if not job.wait_for(r"train step\s+\d+/"):
        return 0  # the job finished before a kill
    if mode == "random":
        time.sleep(rng.uniform(0.0, 0.6))
        job.kill()
        return 1
    deadline = time.monotonic() + 30  # "write": while a step_N.tmp is being written
    while time.monotonic() < deadline and job.process.poll() is None:
        if _staging(checkpoints):
            time.sleep(rng.uniform(0.0, 0.01))
            job.kill()
            return int(_staging(checkpoints))
        time.sleep(0.001)
    job.kill()
    return 0


def _staging(checkpoints: Path) -> bool:
    """Whether a checkpoint is being written (its staging directory is there)."""
    return checkpoints.is_dir() and any(
        p.name.startswith("step_") and p.name.endswith(".tmp") for p in checkpoints.iterdir()
    )


def _check_after_kill(output: Path, newest_before: int) -> int:
    """Every ``step_N`` left is complete and intact, at most ``KEEP`` + 1 (a kill between a save and its
    prune), ``latest`` names one of them, and the newest is not older than before; its step."""
    root = output / CHECKPOINTS_DIR
    steps = sorted(p for p in root.iterdir() if STEP_DIR.fullmatch(p.name)) if root.is_dir() else []
    for step_dir in steps:
        assert (step_dir / CHECKSUMS_FILE).is_file(), f"{step_dir} is visible but incomplete"
        verify_checkpoint(step_dir)
    assert len(steps) <= KEEP + 1, [p.name for p in steps]
    newest = newest_checkpoint(output, hashes=True)
    step = read_meta(newest)["step"] if newest is not None else 0
    assert step >= newest_before, f"the newest checkpoint went back from step {newest_before} to {step}"
    if (root / "latest").is_file():
        assert (root / (root / "latest").read_text().strip()) in steps
    return step


def _collect(log: str, printed: dict[int, str], whole: dict[int, str]) -> None:
    """Every step a job printed has the uninterrupted run's loss, and a resumed job starts right after
    the checkpoint it resumed from (no step skipped, none taken twice within the job)."""
    losses = step_losses(log)
    for step, loss in losses.items():
        assert loss == whole[step], f"step {step}: {loss} vs {whole[step]} uninterrupted"
    resumed = re.search(r"train resuming from \S+ \(step (\d+)", log)
    if losses:
        assert min(losses) == (int(resumed.group(1)) if resumed else 0) + 1, log[-2000:]
    printed.update(losses)
