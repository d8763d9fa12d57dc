"""SIGKILL a 2-rank torchrun pretraining mid-way, rerun with ``--resume auto``: from the checkpoint on,
every step's loss equals the uninterrupted run's, no sample is drawn twice, and MLflow holds one run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

import pytest

from pipeline.testing import kill_tree
from pipeline.train.checkpoint import newest_checkpoint, read_meta

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def step_losses(output: str) -> dict[int, str]:
    return {int(m.group(1)): m.group(2) for m in re.finditer(r"train step\s+(\d+)/\d+\s+(loss \S+)", output)}


# ddp with blocking checkpoints, tracked: the resumed job re-attaches to the killed job's MLflow run.
# fsdp with async ones (written by a thread over a gloo group of their own), untracked: MLflow costs
# each job seconds, its re-attach is the ddp case's and test_resume_world_size's.
@pytest.mark.parametrize(
    ("strategy", "options", "tracked"),
    [("ddp", (), True), ("fsdp", ("checkpoint.async_save=true",), False)],
    ids=["ddp", "fsdp-async"],
)
def test_sigkill_then_resume_auto_continues_the_same_curve(train_jobs, tmp_path, strategy, options, tracked):
    from mlflow.tracking import MlflowClient

    options = (f"parallel.strategy={strategy}", *options)
    # Uninterrupted, with blocking checkpoints (how a checkpoint is written does not change the curve);
    # test_resume_world_size's, too.
    reference = train_jobs.reference(strategy)
    whole = step_losses(reference.stdout)
    assert sorted(whole) == list(range(1, 11))

    uri = train_jobs.store(tmp_path / "killed.db") if tracked else ""
    output = tmp_path / "killed"
    process = subprocess.Popen(
        train_jobs.command(2, output, uri, *options),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and newest_checkpoint(output) is None and process.poll() is None:
            time.sleep(0.05)  # the next checkpoint is 4 steps later
    finally:
        kill_tree(process.pid)  # the launcher, torchrun and both ranks (each in its own session)
        process.wait()
    killed_at = read_meta(newest_checkpoint(output))["step"]
    assert killed_at == 4, "the run was killed before or long after its first checkpoint"

    resumed = step_losses(train_jobs.run(2, output, uri, *options, "checkpoint.resume=auto"))
    assert sorted(resumed) == list(range(killed_at + 1, 11))
    assert resumed == {step: loss for step, loss in whole.items() if step > killed_at}
    meta = read_meta(newest_checkpoint(output))
    assert meta["step"] == 10 and meta["loader"]["sample_index"] == 10 * 8  # every sample once
    result = json.loads((output / "result.json").read_text())
    expected = json.loads((reference.output / "result.json").read_text())
    for key in (
        "steps",
        "tokens_seen",
        "first_train_loss",
        "last_train_loss",
        "initial_val_loss",
        "final_val_loss",
    ):
        assert result[key] == expected[key], key

    if not tracked:
        return
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("lmpipe").experiment_id])
    assert [run.info.run_id for run in runs] == [result["mlflow_run_id"]]  # the resumed job re-attached
    history = {m.step: m.value for m in client.get_metric_history(result["mlflow_run_id"], "train/loss")}
    assert sorted(history) == list(range(1, 11)) and runs[0].info.status == "FINISHED"
