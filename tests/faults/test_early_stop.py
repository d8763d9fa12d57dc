"""Training safety: validation loss that stops improving ends the run after ``train.early_stop_patience``
validations, and ``checkpoint.keep_best`` keeps the best step's checkpoint whatever ``keep`` prunes."""

from __future__ import annotations

import json
import re

import pytest
from faultjobs import TINY

from pipeline.config.train import TrainJobConfig
from pipeline.train.checkpoint import CHECKPOINTS_DIR, best_checkpoint, read_meta
from pipeline.train.pretrain import train
from pipeline.train.step_files import verify_checkpoint

pytestmark = [pytest.mark.faults, pytest.mark.slow]


def test_early_stop_keeps_the_best_checkpoint(tiny_corpus, tmp_path, capsys):
    output = tmp_path / "run"
    # A learning rate far too high: the model gets worse after its first validations, as an SFT run on a
    # small set overfits, only sooner.
    cfg = TrainJobConfig.load(
        None,
        [f"data.shards={tiny_corpus[0]}", f"output_dir={output}", *TINY, "train.max_steps=40"]
        + ["train.lr=0.3", "train.eval_interval=2", "train.early_stop_patience=2"]
        + ["checkpoint.interval=2", "checkpoint.keep=1", "checkpoint.keep_best=true"],
    )
    result = train(cfg)
    printed = capsys.readouterr().out
    vals = {int(step): float(loss) for step, loss in _val_lines(printed)}
    best_step = min((step for step in vals if step > 0), key=lambda step: vals[step])
    assert result.steps < 40 and f"train early stop after step {result.steps}:" in printed
    assert best_step <= result.steps - 2 * 2  # two validations without improvement, then the stop
    best = best_checkpoint(output)
    assert best == output / CHECKPOINTS_DIR / f"step_{best_step}"
    verify_checkpoint(best)
    assert read_meta(best)["progress"]["val_loss"] == pytest.approx(vals[best_step], abs=1e-4)
    kept = sorted(p.name for p in (output / CHECKPOINTS_DIR).iterdir() if p.name.startswith("step_"))
    assert kept == sorted({f"step_{best_step}", f"step_{result.steps}"})  # keep=1, and the best
    assert json.loads((output / "result.json").read_text())["final_val_loss"] == pytest.approx(
        vals[result.steps], abs=1e-4
    )


def _val_lines(printed: str) -> list[tuple[str, str]]:
    return re.findall(r"train step\s+(\d+)/\d+\s+val loss (\S+)", printed)
