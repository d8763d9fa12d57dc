"""``data.train_eval_windows``: after the last step, the final weights' loss on the windows of the first
training samples (the train side of a gap that compares across runs): logged, printed, in result.json,
refused past the samples a run plans, cut to the samples taken by a run that stopped early. Off by
default: test_training_loop.py's result checks."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pipeline.config.model import ModelConfig
from pipeline.config.train import LoopConfig
from pipeline.core.errors import ConfigError
from pipeline.model.transformer import build_model
from pipeline.parallel.dist import DistInfo
from pipeline.parallel.registry import parallelize
from pipeline.train.checkpoint import load_model_for_inference
from pipeline.train.data import ValBatch
from pipeline.train.hooks import evaluate_seen
from pipeline.train.loop import TrainEval, TrainRun
from pipeline.train.pretrain import train
from pipeline.train.windows import TokenWindows


def loss_on_first_samples(run_dir: str, shards: Path, *, samples: int, seed: int) -> float:
    """The checkpoint's mean loss on the first ``samples`` windows of the documented training order
    (one source, first epoch: ``np.random.default_rng((seed, 0))``'s permutation), computed apart from the
    loader."""
    model, args, _ = load_model_for_inference(run_dir)
    windows = TokenWindows(shards, "train", args.seq_len)
    assert samples < windows.num_windows  # all from the first epoch
    order = np.random.default_rng((seed, 0)).permutation(windows.num_windows)[:samples]
    rows = torch.from_numpy(np.stack([windows.window(int(i)) for i in order]))
    with torch.no_grad():
        return float(model(rows[:, :-1], rows[:, 1:])[1])


@pytest.mark.slow
def test_train_eval_is_the_final_weights_loss_on_the_first_samples(
    train_config, tiny_corpus, tmp_path, capsys
):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = train_config(
        "train.max_steps=4",
        "data.train_eval_windows=20",  # of the 32 samples taken; 20 / micro-batch 4 leaves no padding
        "tracking.enabled=true",
        f"tracking.uri={uri}",
        "tracking.system_metrics=false",
    )
    result = train(cfg)
    assert result.final_train_eval_loss == pytest.approx(
        loss_on_first_samples(cfg.output_dir, tiny_corpus[0], samples=20, seed=cfg.train.seed), rel=1e-5
    )
    saved = json.loads((Path(cfg.output_dir) / "result.json").read_text())
    assert saved["final_train_eval_loss"] == result.final_train_eval_loss
    history = MlflowClient(tracking_uri=uri).get_metric_history(result.mlflow_run_id, "train_eval/loss")
    assert [(m.step, m.value) for m in history] == [(4, pytest.approx(result.final_train_eval_loss))]
    assert (
        f"train step     4/4  train eval loss {result.final_train_eval_loss:.4f}" in capsys.readouterr().out
    )


def test_more_windows_than_the_run_trains_on_are_refused(train_config):
    # 8 sequences a step: 4 steps take 32 samples; a budget of 3,072 tokens of 64 takes 48.
    assert train_config("train.max_steps=4", "data.train_eval_windows=32").data.train_eval_windows == 32
    with pytest.raises(ConfigError, match="data.train_eval_windows: 33 is more than the 32 samples"):
        train_config("train.max_steps=4", "data.train_eval_windows=33")
    with pytest.raises(ConfigError, match="data.train_eval_windows: 49 is more than the 48 samples"):
        train_config("train.max_tokens=3072", "data.train_eval_windows=49")
    with pytest.raises(ConfigError, match="data.train_eval_windows: must be >= 0"):
        train_config("data.train_eval_windows=-1")


def test_a_run_that_stopped_early_is_measured_on_the_samples_it_took(capsys):
    """An early stop after step 2 of 8-sample steps has taken 16 samples: those, not the 100 asked for."""
    args = ModelConfig(size="tiny", seq_len=16).args(vocab_size=101)
    loop = LoopConfig(global_batch_size=8, micro_batch_size=4)
    torch.manual_seed(0)
    parallel = parallelize(build_model(args), strategy="ddp", dist=DistInfo(), loop=loop, total_steps=10)
    tokens = torch.randint(0, 101, (4, 17), generator=torch.Generator().manual_seed(0))
    asked: list[int] = []
    logged: list[tuple[int, dict]] = []

    def batches(samples: int) -> list[ValBatch]:
        asked.append(samples)
        return [ValBatch("all", tokens[:, :-1], tokens[:, 1:])]

    run = TrainRun(
        parallel,
        loop=loop,
        dist=DistInfo(),
        batches=iter([]),
        val_batches=list,
        tracker=SimpleNamespace(log_metrics=lambda metrics, step: logged.append((step, metrics))),
        checkpointer=None,
        total_steps=10,
        accum_steps=1,
    )
    loss = evaluate_seen(run, TrainEval(100, batches, ["all"]), step=2)
    assert asked == [16] and logged == [
        (2, {"train_eval/loss": loss, "train_eval/ppl": pytest.approx(np.exp(loss))})
    ]
    assert "train eval on the first 16 training samples, not 100" in capsys.readouterr().out
    assert evaluate_seen(run, TrainEval(16, batches, ["all"]), step=2) == loss and asked[-1] == 16
    assert "not 16" not in capsys.readouterr().out
