"""MLflow: a tiny run logged to sqlite under tmp_path, read back with MlflowClient."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config.train import TrackingConfig
from pipeline.core.files import file_sha256
from pipeline.train.pretrain import train
from pipeline.train.tracking import Tracker


@pytest.mark.slow
def test_training_run_is_tracked(train_config, tiny_corpus, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = train_config(
        "train.max_steps=10",
        "train.log_interval=3",
        "train.eval_interval=5",
        "tracking.enabled=true",
        f"tracking.uri={uri}",
        "tracking.experiment=tiny-test",
        "tracking.run_name=tiny",
    )
    result = train(cfg)

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tiny-test")
    assert experiment.artifact_location == (Path(cfg.output_dir).resolve() / "mlartifacts").as_uri()
    run = client.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "tiny"
    assert run.data.params["train.max_steps"] == "10" and run.data.params["model.size"] == "tiny"
    assert len(run.data.params) == len(cfg.flat())
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == [1, 3, 6, 9, 10]
    assert history[-1].value < history[0].value
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/loss")] == [0, 5, 10]
    for key in ("lr", "grad_norm", "tokens_seen", "tokens_per_s", "val/ppl"):
        assert key in run.data.metrics
    tags = run.data.tags
    n, d = int(tags["N"]), int(tags["D"])
    assert n == result.n_params and d == result.tokens_seen == 10 * 512 and int(tags["C"]) == 6 * n * d
    assert tags["strategy"] == "ddp" and tags["world_size"] == "1"
    assert tags["manifest_sha256"] == file_sha256(tiny_corpus[0] / "manifest.json")


def test_disabled_or_other_rank_is_a_no_op(tmp_path):
    for tracker in (
        Tracker.start(TrackingConfig(enabled=False), output_dir=tmp_path, params={"a": "1"}, tags={}),
        Tracker.start(TrackingConfig(), output_dir=tmp_path, params={"a": "1"}, tags={}, active=False),
    ):
        assert tracker.run_id is None
        tracker.log_metrics({"train/loss": 1.0}, step=1)
        tracker.set_tags({"D": 1})
        tracker.finish()
    assert list(tmp_path.iterdir()) == []
