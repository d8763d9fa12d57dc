"""A checkpoint that went bad after it was written (a truncated shard or meta.json, a flipped byte):
``checkpoint.resume=auto`` passes over it to the step before with one warning line and continues the
same curve; eval, export and consolidate refuse it with one line naming the file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from faultjobs import TINY, step_losses

from pipeline.cli.main import main
from pipeline.config.train import TrainJobConfig
from pipeline.train.checkpoint import CHECKPOINTS_DIR, newest_checkpoint
from pipeline.train.pretrain import train
from pipeline.train.step_files import CorruptCheckpointError, verify_checkpoint

pytestmark = [pytest.mark.faults, pytest.mark.slow]


def test_a_corrupt_step_is_passed_over_on_resume_and_refused_by_readers(tiny_corpus, tmp_path, capsys):
    shards, output = tiny_corpus[0], tmp_path / "run"

    def config(steps: int) -> TrainJobConfig:
        return TrainJobConfig.load(
            None,
            [f"data.shards={shards}", f"output_dir={output}", *TINY, f"train.max_steps={steps}"]
            + ["checkpoint.interval=2", "checkpoint.keep=3"],
        )

    train(config(6))
    first = step_losses(capsys.readouterr().out)
    step_6 = output / CHECKPOINTS_DIR / "step_6"
    shard = sorted(step_6.glob("*.distcp"))[0]
    size = shard.stat().st_size
    _truncate(shard)
    problem = f"checkpoint {step_6} is corrupt: {shard} has {size // 2} bytes, {size} were written"

    for argv in (
        ["eval", "--checkpoint", str(output), "--shards", str(shards)],
        ["export", "hf", str(step_6), "--output", str(tmp_path / "hf")],
        ["checkpoint", "consolidate", str(step_6), "--output", str(tmp_path / "weights.safetensors")],
    ):
        assert main(argv) == 2, argv
        assert capsys.readouterr().err.splitlines() == [f"lmpipe: error: {problem}"], argv

    train(config(8))  # checkpoint.resume=auto
    resumed = capsys.readouterr()
    assert resumed.err.splitlines() == [f"lmpipe: warning: {problem}; passing over it for the step before"]
    assert f"train resuming from {output / CHECKPOINTS_DIR / 'step_4'} (step 4" in resumed.out
    losses = step_losses(resumed.out)
    assert sorted(losses) == [5, 6, 7, 8]  # steps 5 and 6 again, as the first run took them
    assert {step: losses[step] for step in (5, 6)} == {step: first[step] for step in (5, 6)}
    assert sorted(p.name for p in (output / CHECKPOINTS_DIR).iterdir()) == [
        "latest",
        "step_4",
        "step_6",
        "step_8",
    ]
    verify_checkpoint(step_6)  # written again, whole

    meta = output / CHECKPOINTS_DIR / "step_8" / "meta.json"
    _truncate(meta)
    assert newest_checkpoint(output, hashes=True) == step_6
    with pytest.raises(CorruptCheckpointError, match=re.escape(f"{meta} has")):
        verify_checkpoint(meta.parent)

    flipped = sorted(step_6.glob("*.distcp"))[0]  # the same size, other bytes: only the checksum sees it
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0xFF
    flipped.write_bytes(bytes(data))
    verify_checkpoint(step_6, hashes=False)
    with pytest.raises(CorruptCheckpointError, match="does not match the checksum it was written with"):
        verify_checkpoint(step_6)


def _truncate(path: Path) -> None:
    """Cut ``path`` to half its size, as a full disk or an interrupted copy would."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
