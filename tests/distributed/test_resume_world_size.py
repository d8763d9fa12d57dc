"""A checkpoint resumes on another world size: 2 ranks -> 1 process -> 2 ranks, for DDP and FSDP (DCP
reshards; one DDP process has no process group at all) and ZeRO-2 and 3 (DeepSpeed's universal checkpoint,
converted on first need), continuing the same loss curve with every sample seen once. ZeRO-1 saves and
converts exactly as ZeRO-2 does (partitioned fp32 optimizer state, whole weights); its case cost CI
~2.5 min of its 2 cores; ZeRO-1's checkpoints still round-trip and load into one process in
``test_strategies``.

How, per strategy: one uninterrupted 2-rank torchrun job of 10 steps with checkpoints at 4, 8 and 10 is
the reference (``conftest.TrainJobs``: trained once per session, the DDP and FSDP ones shared with
``test_kill_resume``; only copies of it are resumed). A copy of its output dir (and MLflow db) without
the checkpoints after step 4 is what a job killed after its step-4 checkpoint leaves
(``test_kill_resume`` kills one for real);
``checkpoint.resume=auto`` continues it in one plain process (``lmpipe train``, no torchrun). That
job's own step-8 checkpoint, now one rank's, is continued on 2 ranks the same way. Each resumed job
re-attaches to the MLflow run; its values are the ones logged after the copy, at full precision.
The pure parts (which ZeRO state a resume loads, reuse and failure of a conversion) are plain unit
tests, without the slow/distributed marks.

Tolerances against the uninterrupted run (another world size sums gradients in another order):
losses, grad norms and the final val loss rtol 1e-5; the LR is the schedule's, equal. Measured on
the 2-core CPU machine over all five strategies: losses <= 7e-8, grad norms <= 2.1e-6 (fsdp).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from pipeline.parallel.dist import DistInfo
from pipeline.parallel.zero_checkpoint import (
    TAG,
    UNIVERSAL_TAG,
    DeepSpeedCheckpointer,
    convert_to_universal,
    resume_tag,
)
from pipeline.train.checkpoint import newest_checkpoint, read_meta

STEPS, GLOBAL_BATCH = 10, 8
"""The shape of ``conftest.TrainJobs``: checkpoints at steps 4, 8 and 10."""
LOSS_RTOL, NORM_RTOL = 1e-5, 1e-5
RESUME = "checkpoint.resume=auto"


def uri(output: Path) -> str:
    return f"sqlite:///{output.with_suffix('.db')}"


def copy_stopped_after(source: Path, step: int, target: Path) -> None:
    """``target``: ``source``'s output and MLflow db as a job stopped after its step-``step`` checkpoint left
    them."""
    shutil.copytree(source, target)
    shutil.copyfile(source.with_suffix(".db"), target.with_suffix(".db"))
    (target / "result.json").unlink()
    for step_dir in (target / "checkpoints").glob("step_*"):
        if int(step_dir.name.removeprefix("step_")) > step:
            shutil.rmtree(step_dir)
    assert read_meta(newest_checkpoint(target))["step"] == step


def metrics(output: Path) -> Counter:
    """Every (key, step, timestamp, value) the output's MLflow run holds."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri(output))
    run_id = read_meta(newest_checkpoint(output))["mlflow_run_id"]
    return Counter(
        (key, m.step, m.timestamp, m.value)
        for key in ("train/loss", "grad_norm", "lr", "val/loss")
        for m in client.get_metric_history(run_id, key)
    )


def logged_since(before: Counter, output: Path) -> dict[str, dict[int, float]]:
    """{key: {step: value}} of what the resumed job in ``output`` logged on top of ``before``."""
    values: dict[str, dict[int, float]] = {}
    for key, step, _, value in metrics(output) - before:
        assert step not in values.setdefault(key, {}), f"{key} logged twice at step {step}"
        values[key][step] = value
    return values


def assert_continues(
    resumed: dict[str, dict[int, float]], whole: dict[str, dict[int, float]], after: int
) -> None:
    steps = list(range(after + 1, STEPS + 1))
    for key, rtol in (("train/loss", LOSS_RTOL), ("grad_norm", NORM_RTOL), ("lr", 0)):
        assert sorted(resumed[key]) == steps, key
        expected = [whole[key][step] for step in steps]
        assert [resumed[key][step] for step in steps] == pytest.approx(expected, rel=rtol, abs=0), key
    assert resumed["val/loss"][STEPS] == pytest.approx(whole["val/loss"][STEPS], rel=LOSS_RTOL)


def as_dict(counter: Counter) -> dict[str, dict[int, float]]:
    values: dict[str, dict[int, float]] = {}
    for key, step, _, value in counter:
        values.setdefault(key, {})[step] = value
    return values


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp", "zero2", "zero3"])
def test_resume_on_another_world_size_continues_the_same_curve(train_jobs, tmp_path, strategy):
    assert (train_jobs.steps, train_jobs.global_batch) == (STEPS, GLOBAL_BATCH)
    reference = train_jobs.reference(strategy)
    whole = as_dict(metrics(reference.output))
    assert sorted(whole["train/loss"]) == list(range(1, STEPS + 1))
    root = tmp_path / "runs+1"  # a '+' in the path: DeepSpeed's trap (convert_to_universal)

    # 2 ranks -> 1 process, from step 4.
    one = root / "one"
    copy_stopped_after(reference.output, 4, one)
    before = metrics(one)
    output = train_jobs.run(1, one, uri(one), f"parallel.strategy={strategy}", RESUME)
    assert "resuming from" in output and "step 4" in output
    assert_continues(logged_since(before, one), whole, after=4)
    meta = read_meta(newest_checkpoint(one))
    assert (
        meta["world_size"] == 1 and meta["loader"]["sample_index"] == STEPS * GLOBAL_BATCH
    )  # every sample once
    if strategy.startswith("zero"):  # converted once, into the checkpoint it resumed from
        assert (one / "checkpoints" / "step_4" / UNIVERSAL_TAG).is_dir()
        assert not (one / "checkpoints" / "step_8" / UNIVERSAL_TAG).exists()
        assert not (reference.output / "checkpoints" / "step_4" / UNIVERSAL_TAG).exists()  # the copy, not it

    # 1 process -> 2 ranks, from the one-process job's step 8.
    two = root / "two"
    copy_stopped_after(one, 8, two)
    before = metrics(two)
    train_jobs.run(2, two, uri(two), f"parallel.strategy={strategy}", RESUME)
    assert_continues(logged_since(before, two), whole, after=8)
    if strategy.startswith("zero"):
        assert (two / "checkpoints" / "step_8" / UNIVERSAL_TAG).is_dir()
    meta = read_meta(newest_checkpoint(two))
    assert meta["world_size"] == 2 and meta["loader"]["sample_index"] == STEPS * GLOBAL_BATCH
    result = json.loads((two / "result.json").read_text())
    expected = json.loads((reference.output / "result.json").read_text())
    assert (result["steps"], result["tokens_seen"]) == (expected["steps"], expected["tokens_seen"])


def fake_zero_checkpoint(directory: Path, ranks: int) -> Path:
    (directory / TAG).mkdir(parents=True)
    for rank in range(ranks):
        (directory / TAG / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt").touch()
    return directory


@pytest.mark.parametrize(
    ("saved_by", "world_size", "tag"),
    [(2, 2, TAG), (2, 1, UNIVERSAL_TAG), (1, 2, UNIVERSAL_TAG), (4, 2, UNIVERSAL_TAG)],
)
def test_zero_resume_converts_only_for_another_world_size(tmp_path, saved_by, world_size, tag):
    assert resume_tag(fake_zero_checkpoint(tmp_path, saved_by), world_size) == tag


def test_zero_resume_without_zero_state_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no ZeRO state"):
        resume_tag(tmp_path, 2)


def test_a_finished_conversion_is_reused(tmp_path):
    directory = fake_zero_checkpoint(tmp_path, 2)  # not convertible: a reused conversion never reads it
    (directory / UNIVERSAL_TAG).mkdir()
    assert convert_to_universal(directory) == directory / UNIVERSAL_TAG


def test_a_failed_conversion_fails_the_load_clearly_and_leaves_nothing_to_load(tmp_path):
    directory = fake_zero_checkpoint(tmp_path, 4)  # empty files: ds_to_universal cannot read them
    zero = object.__new__(DeepSpeedCheckpointer)  # the conversion comes before the engine is touched
    zero.dist = DistInfo(world_size=2)
    with pytest.raises(
        RuntimeError,
        match="holds ZeRO state of 4 ranks, and converting it to DeepSpeed's "
        "universal checkpoint for 2 failed: ",
    ):
        zero.load(directory)
    assert not (directory / UNIVERSAL_TAG).exists()


@pytest.mark.distributed
def test_one_process_gets_a_group_of_one_for_sharding_strategies_only():
    # In a child process: a process group made here would outlive the test.
    code = """
import torch.distributed as dist
from pipeline.parallel.dist import init_distributed, shutdown_distributed
info = init_distributed(strategy="ddp")
assert not info.owns_group and not dist.is_initialized()
info = init_distributed(strategy="zero3")
assert info.owns_group and dist.get_world_size() == 1 and (info.rank, info.world_size) == (0, 1)
shutdown_distributed(info)
assert not dist.is_initialized()
"""
    env = {key: value for key, value in os.environ.items() if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
