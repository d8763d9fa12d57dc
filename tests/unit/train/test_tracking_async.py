"""The Tracker's metric queue, key escaping and artifacts, against a real sqlite MLflow store."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pipeline.config.model import ModelConfig
from pipeline.config.train import TrackingConfig
from pipeline.train.tracking import Tracker, memory_metrics, model_size_tag


class Spy:
    """A real MlflowClient whose metric ``log_batch`` calls are counted, optionally slowed or failing."""

    def __init__(self, client, *, delay: float = 0.0, fail: bool = False):
        self.client, self.delay, self.fail, self.metric_batches = client, delay, fail, []

    def log_batch(self, run_id, metrics=(), **kwargs):
        if metrics:
            self.metric_batches.append(len(metrics))
            time.sleep(self.delay)
            if self.fail:
                raise ConnectionError("store down")
        return self.client.log_batch(run_id, metrics=metrics, **kwargs)

    def __getattr__(self, name):
        return getattr(self.client, name)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[TrackingConfig, Path]:
    """One sqlite store for the module (creating its schema takes seconds)."""
    root = tmp_path_factory.mktemp("mlflow")
    return TrackingConfig(uri=f"sqlite:///{root / 'mlflow.db'}", experiment="async-test"), root


def start(store, *, params=None, **spy) -> tuple[Tracker, Spy]:
    cfg, root = store
    tracker = Tracker.start(cfg, output_dir=root, params=params or {"a": "1"}, tags={"strategy": "ddp"})
    tracker.client = Spy(tracker.client, **spy)
    return tracker, tracker.client


def test_one_flush_of_2500_metrics_is_three_batches_and_all_arrive(store):
    tracker, spy = start(store)
    tracker.log_metrics({f"m{i}": float(i) for i in range(2500)}, step=7)
    tracker.finish()
    assert spy.metric_batches == [1000, 1000, 500]
    run = spy.client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED"
    assert len(run.data.metrics) == 2500 and run.data.metrics["m2499"] == 2499.0


def test_logging_does_not_wait_for_the_store(store):
    tracker, spy = start(store, delay=0.5)
    began = time.perf_counter()
    for step in range(1, 4):
        tracker.log_metrics({"train/loss": 4.0 - step, "mfu": None}, step=step)
    assert time.perf_counter() - began < 0.1
    tracker.finish()
    history = spy.client.get_metric_history(tracker.run_id, "train/loss")
    assert [(m.step, m.value) for m in history] == [(1, 3.0), (2, 2.0), (3, 1.0)]
    assert "mfu" not in spy.client.get_run(tracker.run_id).data.metrics  # None: not logged


def test_a_failing_store_is_reported_at_finish_and_the_run_still_closes(store):
    tracker, spy = start(store, fail=True)
    tracker.log_metrics({"train/loss": 1.0}, step=1)
    with pytest.raises(RuntimeError, match="MLflow metric logging failed: store down"):
        tracker.finish()
    assert spy.client.get_run(tracker.run_id).info.status == "FINISHED"


def test_drain_before_a_checkpoint_puts_every_logged_metric_in_the_store(store):
    tracker, spy = start(store, delay=0.2)  # slower than a step: without the wait, the store lags
    for step in range(1, 5):
        tracker.log_metrics({"train/loss": float(step)}, step=step)
    tracker.drain()
    assert [m.step for m in spy.client.get_metric_history(tracker.run_id, "train/loss")] == [1, 2, 3, 4]
    tracker.finish()


def test_drain_does_not_wait_on_a_failing_store(store):
    tracker, spy = start(store, fail=True)
    tracker.log_metrics({"train/loss": 1.0}, step=1)
    deadline = time.monotonic() + 10
    while tracker._error is None and time.monotonic() < deadline:  # the first failed send
        time.sleep(0.05)
    tracker.log_metrics({"train/loss": 0.5}, step=2)
    began = time.perf_counter()
    tracker.drain()
    assert time.perf_counter() - began < 0.5  # training goes on; the metrics stay queued
    with pytest.raises(RuntimeError, match="store down"):
        tracker.finish()


def test_a_preempted_block_sends_its_metrics_and_leaves_the_run_open(store):
    tracker, spy = start(store, delay=0.2)
    with pytest.raises(KeyboardInterrupt), tracker.failing_on_error(keep_open=(KeyboardInterrupt,)):
        tracker.log_metrics({"train/loss": 2.0}, step=5)
        raise KeyboardInterrupt
    assert spy.client.get_run(tracker.run_id).info.status == "RUNNING"
    assert [m.step for m in spy.client.get_metric_history(tracker.run_id, "train/loss")] == [5]


def test_keys_are_escaped_values_truncated_and_artifacts_stored(store, tmp_path):
    tracker, spy = start(store, params={"data.sources.web@cc": "x" * 7000})
    config, result = tmp_path / "config.yaml", tmp_path / "result.json"
    config.write_text("train: {}\n")
    tracker.log_artifact(config)
    tracker.log_metrics({"val/loss/web@cc": 1.5}, step=0)
    result.write_text("{}\n")
    tracker.finish(artifacts=(result, tmp_path / "absent.json"))  # one not written: skipped
    run = spy.client.get_run(tracker.run_id)
    assert run.data.params == {"data.sources.web_cc": "x" * 6000}
    assert run.data.metrics == {"val/loss/web_cc": 1.5}
    assert [a.path for a in spy.client.list_artifacts(tracker.run_id)] == ["config.yaml", "result.json"]
    assert (
        Path(spy.client.download_artifacts(tracker.run_id, "config.yaml", str(tmp_path / "dl"))).read_text()
        == "train: {}\n"
    )


def test_memory_metrics_on_cpu():
    import torch

    metrics = memory_metrics(torch.device("cpu"))
    assert set(metrics) == {"memory/rss_gb"} and 0.01 < metrics["memory/rss_gb"] < 64


def test_model_size_tag_names_the_rung_and_any_override():
    assert model_size_tag(ModelConfig(size="14m")) == {"model_size": "14m"}
    assert model_size_tag(ModelConfig(size="14m", d_model=320, n_kv_heads=2)) == {
        "model_size": "14m+d_model=320+n_kv_heads=2"
    }
