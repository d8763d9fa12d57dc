"""MLflow against a real ``mlflow server`` on 127.0.0.1: a tiny training run logs over HTTP, and
artifacts go through the server's proxied artifact store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.config.train import TrackingConfig, TrainJobConfig
from pipeline.core.files import file_sha256
from pipeline.testing import free_port, make_tiny_corpus
from pipeline.train.tracking import Tracker

pytestmark = pytest.mark.slow

TINY = [
    "model.size=tiny",
    "model.seq_len=64",
    "train.global_batch_size=8",
    "train.micro_batch_size=4",
    "train.warmup_steps=2",
    "train.max_steps=6",
    "train.log_interval=3",
    "train.eval_interval=0",
    "data.val_windows=8",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """(tracking URI, artifact directory) of a server this fixture starts, and stops (SIGTERM) after."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    # One worker and no job runner: 2 processes and ~10 s to start instead of 15 and ~23 s (PLATFORM.md §5).
    process = subprocess.Popen(
        [
            str(mlflow),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{root / 'server.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
        ],
        cwd=root,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=(root / "server.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited {process.returncode}: {(root / 'server.log').read_text()}"
                )
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"mlflow server did not answer /health in 90 s: {(root / 'server.log').read_text()}"
                )
            time.sleep(0.5)
        yield uri, root / "artifacts"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_training_logs_to_a_server(server, tmp_path):
    from mlflow.tracking import MlflowClient

    from pipeline.train.pretrain import train

    uri, _ = server
    shards, _ = make_tiny_corpus(tmp_path / "corpus")
    cfg = TrainJobConfig.load(
        None,
        [
            f"data.shards={shards}",
            f"output_dir={tmp_path / 'run'}",
            *TINY,
            f"tracking.uri={uri}",
            "tracking.experiment=server-test",
        ],
    )
    result = train(cfg)

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.max_steps"] == "6" and len(run.data.params) == len(cfg.flat())
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == [1, 3, 6] and history[-1].value < history[0].value
    assert {"lr", "grad_norm", "tokens_seen", "tokens_per_s", "val/loss", "val/ppl"} <= set(run.data.metrics)
    tags = run.data.tags
    assert int(tags["D"]) == result.tokens_seen == 6 * 512 and int(tags["C"]) == 6 * int(tags["N"]) * int(
        tags["D"]
    )
    assert tags["strategy"] == "ddp" and tags["world_size"] == "1"
    assert tags["manifest_sha256"] == file_sha256(shards / "manifest.json")
    assert tags["model_size"] == "tiny"
    assert {"mfu", "memory/rss_gb"} & set(run.data.metrics) == {"memory/rss_gb"}  # CPU: no MFU
    paths = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "result.json", "manifests"} <= paths, paths
    assert [a.path for a in client.list_artifacts(run.info.run_id, "manifests")] == ["manifests/0-shards"]


def test_artifacts_are_uploaded_through_the_server(server, tmp_path):
    from mlflow.tracking import MlflowClient

    uri, artifact_dir = server
    config = tmp_path / "config.yaml"
    config.write_text("train:\n  max_steps: 6\n")
    tracker = Tracker.start(
        TrackingConfig(uri=uri, experiment="server-artifacts"),
        output_dir=tmp_path,
        params={"train.max_steps": "6"},
        tags={"model_size": "tiny"},
    )
    tracker.log_artifact(config)
    tracker.log_metrics({"train/loss": 2.5}, step=1)
    tracker.finish()

    client = MlflowClient(tracking_uri=uri)
    assert client.get_run(tracker.run_id).data.metrics == {"train/loss": 2.5}
    assert client.get_experiment_by_name("server-artifacts").artifact_location.startswith("mlflow-artifacts:")
    assert [a.path for a in client.list_artifacts(tracker.run_id)] == ["config.yaml"]
    downloaded = client.download_artifacts(tracker.run_id, "config.yaml", str(tmp_path / "download"))
    assert Path(downloaded).read_text() == config.read_text()
    stored = [
        p for p in artifact_dir.rglob("config.yaml") if tracker.run_id in p.parts
    ]  # stored by the server
    assert [p.read_text() for p in stored] == [config.read_text()]
