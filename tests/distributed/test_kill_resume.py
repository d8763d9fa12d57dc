"""SIGKILL a 2-rank torchrun pretraining mid-way, rerun with ``--resume auto``: from the checkpoint on,
every step's loss equals the uninterrupted run's, no sample is drawn twice, and MLflow holds one run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.train.checkpoint import newest_checkpoint, read_meta

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

LMPIPE = str(Path(sys.executable).with_name("lmpipe"))


def command(shards: Path, output: Path, uri: str, options: tuple[str, ...] = ()) -> list[str]:
    return [
        LMPIPE,
        "launch",
        "torchrun",
        "--nproc-per-node",
        "2",
        "--",
        "train",
        f"data.shards={shards}",
        f"output_dir={output}",
        "model.seq_len=64",
        "train.global_batch_size=8",
        "train.micro_batch_size=2",
        "train.max_steps=10",
        "train.warmup_steps=2",
        "train.log_interval=1",
        "train.eval_interval=0",
        "data.val_windows=8",
        "checkpoint.interval=4",
        "checkpoint.keep=3",
        f"tracking.uri={uri}",
        *options,
    ]


def run(cmd: list[str]) -> str:
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def step_losses(output: str) -> dict[int, str]:
    return {int(m.group(1)): m.group(2) for m in re.finditer(r"train step\s+(\d+)/\d+\s+(loss \S+)", output)}


# ddp with blocking checkpoints; fsdp with async ones (written by a thread over a gloo group of their own).
@pytest.mark.parametrize(
    "options", [(), ("parallel.strategy=fsdp", "checkpoint.async_save=true")], ids=["ddp", "fsdp-async"]
)
def test_sigkill_then_resume_auto_continues_the_same_curve(tiny_corpus, tmp_path, options):
    from mlflow.tracking import MlflowClient

    shards = tiny_corpus[0]
    whole = step_losses(
        run(command(shards, tmp_path / "whole", f"sqlite:///{tmp_path / 'whole.db'}", options))
    )
    assert sorted(whole) == list(range(1, 11))

    uri = f"sqlite:///{tmp_path / 'killed.db'}"
    output = tmp_path / "killed"
    process = subprocess.Popen(
        command(shards, output, uri, options),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and newest_checkpoint(output) is None and process.poll() is None:
            time.sleep(0.01)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the launcher, torchrun and both ranks
        process.wait()
    killed_at = read_meta(newest_checkpoint(output))["step"]
    assert killed_at == 4, "the run was killed before or long after its first checkpoint"

    resumed = step_losses(run([*command(shards, output, uri, options), "checkpoint.resume=auto"]))
    assert sorted(resumed) == list(range(killed_at + 1, 11))
    assert resumed == {step: loss for step, loss in whole.items() if step > killed_at}
    meta = read_meta(newest_checkpoint(output))
    assert meta["step"] == 10 and meta["loader"]["sample_index"] == 10 * 8  # every sample once
    result = json.loads((output / "result.json").read_text())
    expected = json.loads((tmp_path / "whole" / "result.json").read_text())
    for key in (
        "steps",
        "tokens_seen",
        "first_train_loss",
        "last_train_loss",
        "initial_val_loss",
        "final_val_loss",
    ):
        assert result[key] == expected[key], key

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("lmpipe").experiment_id])
    assert [run.info.run_id for run in runs] == [result["mlflow_run_id"]]  # the resumed job re-attached
    history = {m.step: m.value for m in client.get_metric_history(result["mlflow_run_id"], "train/loss")}
    assert sorted(history) == list(range(1, 11)) and runs[0].info.status == "FINISHED"
