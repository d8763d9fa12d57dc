"""A checkpoint written to a disk that fills up (a real tmpfs of a set size, mounted for the test)
stops the job with one clear error, leaves the previous checkpoint intact and frees its partial
files; once there is room again a rerun continues the same curve."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from faultjobs import TINY, step_losses

from pipeline.config.train import TrainJobConfig
from pipeline.testing import skip_or_fail
from pipeline.train.checkpoint import CHECKPOINTS_DIR, newest_checkpoint
from pipeline.train.pretrain import train
from pipeline.train.step_files import CheckpointWriteError, verify_checkpoint

pytestmark = [pytest.mark.faults, pytest.mark.slow]

SHAPE = ["train.max_steps=4", "checkpoint.interval=2", "checkpoint.keep=1"]


@pytest.fixture
def small_disk(tmp_path):
    """``mount(size_bytes) -> dir``: a tmpfs of that size (root only), unmounted after the test; resizing
    it in place (``mount -o remount``) is how the test frees space."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = []

    def mount(size_bytes: int, *, remount: bool = False) -> Path:
        options = f"{'remount,' if remount else ''}size={size_bytes}"
        command = ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(disk)]
        done = subprocess.run(command, capture_output=True)
        if done.returncode != 0:
            skip_or_fail(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(disk)
        return disk

    yield mount
    if mounted:
        subprocess.run(["umount", str(disk)], check=False)


def test_a_full_disk_stops_with_one_error_and_a_rerun_continues(tiny_corpus, tmp_path, small_disk, capsys):
    shards = tiny_corpus[0]

    def config(output: Path) -> TrainJobConfig:
        return TrainJobConfig.load(None, [f"data.shards={shards}", f"output_dir={output}", *TINY, *SHAPE])

    train(config(tmp_path / "whole"))  # where the room a step needs is measured
    whole = step_losses(capsys.readouterr().out)
    step_bytes = _size(tmp_path / "whole" / CHECKPOINTS_DIR / "step_4")
    disk = small_disk(int(step_bytes * 1.5) + 64 * 1024)  # one step and config.yaml fit, not two steps

    output = disk / "run"
    with pytest.raises(CheckpointWriteError) as stop:
        train(config(output))
    message = str(stop.value)
    assert f"no space left on the device of {output / CHECKPOINTS_DIR}" in message, message
    assert "step_2 is intact" in message, message
    assert "\n" not in message
    assert [p.name for p in (output / CHECKPOINTS_DIR).iterdir() if p.name.startswith("step_")] == ["step_2"]
    verify_checkpoint(output / CHECKPOINTS_DIR / "step_2")  # the previous checkpoint is whole
    first = step_losses(capsys.readouterr().out)

    small_disk(4 * step_bytes, remount=True)  # room again
    result = train(config(output))
    rerun = step_losses(capsys.readouterr().out)
    assert sorted(rerun) == [3, 4] and {**first, **rerun} == whole
    assert result.steps == 4 and newest_checkpoint(output, hashes=True) == output / CHECKPOINTS_DIR / "step_4"


def _size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
