"""A sweep's lineage as a user sees it in the MLflow UI: headless Chromium screenshots the runs table
and a metric chart of a parent run and its children served by ``mlflow ui`` on 127.0.0.1, and reads the
rendered page; the MLflow REST API confirms the parent, the children, their dataset inputs and
``val/loss`` curves. Skips only where no Chromium is installed (fails instead under CI=true)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.config.train import TrackingConfig
from pipeline.testing import free_port, skip_or_fail, write_random_shards
from pipeline.train.lineage import log_shards_inputs
from pipeline.train.tracking import Tracker

pytestmark = pytest.mark.slow

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
EXPERIMENT = "ui-sweep"
CHILDREN = ("lr-0.5", "lr-1", "lr-2")


def chromium() -> str:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    skip_or_fail(f"no Chromium binary ({', '.join(CHROMIUM_NAMES)}) on PATH")


def wait_for(url: str, process: subprocess.Popen, log: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow ui exited {process.returncode}: {log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"mlflow ui did not answer {url} in {seconds:.0f} s: {log.read_text()}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> tuple[str, Path]:
    """(sqlite URI, shards dir) of a sweep as ``lmpipe sweep run`` logs one: a parent run and three
    children (``mlflow.parentRunId``) that trained on the shards and logged ``val/loss`` curves."""
    root = tmp_path_factory.mktemp("ui-sweep")
    shards = root / "demo-shards"
    write_random_shards(shards, {"train": [40] * 20, "val": [40] * 4})
    uri = f"sqlite:///{root / 'mlflow.db'}"
    parent = Tracker.start(
        TrackingConfig(uri=uri, experiment=EXPERIMENT, run_name="sweep"), output_dir=root, params={}, tags={}
    )
    for i, name in enumerate(CHILDREN):
        child = Tracker.start(
            TrackingConfig(uri=uri, experiment=EXPERIMENT, run_name=name, parent_run_id=parent.run_id or ""),
            output_dir=root,
            params={"optim.lr_scale": name.removeprefix("lr-")},
            tags={},
        )
        log_shards_inputs(child, [shards], context="train")
        for step in range(1, 6):
            child.log_metrics({"val/loss": 5.0 / step + 0.3 * i}, step=step * 10)
        child.finish()
    parent.finish()
    return uri, shards


@pytest.fixture(scope="module")
def ui(sweep, tmp_path_factory) -> Iterator[str]:
    """The base URL of ``mlflow ui`` over the sweep's store (one worker: PLATFORM.md §5)."""
    uri, _ = sweep
    root = tmp_path_factory.mktemp("ui")
    port = free_port()
    log = root / "ui.log"
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "ui", "--backend-store-uri", uri]
        + ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=root,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{base}/health", process, log, seconds=75)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def api(base: str, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{base}/api/2.0/mlflow/{path}", data=data)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def browse(browser: str, url: str, screenshot: Path) -> str:
    """Screenshot ``url`` and return its DOM once the page's scripts have run (virtual time)."""

    def headless(*extra: str) -> bytes:
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--window-size=1500,900"]
        flags += ["--virtual-time-budget=60000", f"--user-data-dir={screenshot.parent / 'profile'}"]
        done = subprocess.run([browser, *flags, *extra, url], check=True, capture_output=True, timeout=90)
        return done.stdout

    headless(f"--screenshot={screenshot}")
    return headless("--dump-dom").decode("utf-8", "replace")


def test_the_ui_shows_the_sweep_with_its_data_and_curves(sweep, ui, tmp_path):
    browser = chromium()
    _, shards = sweep
    experiment = api(ui, f"experiments/get-by-name?experiment_name={EXPERIMENT}")["experiment"]
    tags = {tag["key"]: tag["value"] for tag in experiment.get("tags", [])}
    assert tags["mlflow.experimentKind"] == "custom_model_development"  # opens in the training view
    runs = api(ui, "runs/search", {"experiment_ids": [experiment["experiment_id"]], "max_results": 50})[
        "runs"
    ]
    by_name = {run["info"]["run_name"]: run for run in runs}
    assert set(by_name) == {"sweep", *CHILDREN}
    parent_id = by_name["sweep"]["info"]["run_id"]
    for name in CHILDREN:
        run = by_name[name]
        run_tags = {tag["key"]: tag["value"] for tag in run["data"]["tags"]}
        assert run_tags["mlflow.parentRunId"] == parent_id
        (data,) = run["inputs"]["dataset_inputs"]
        assert data["dataset"]["name"] == shards.name
        assert {m["key"] for m in run["data"]["metrics"]} == {"val/loss"}
        history = api(ui, f"metrics/get-history?run_id={run['info']['run_id']}&metric_key=val/loss")[
            "metrics"
        ]
        assert [m["step"] for m in history] == [10, 20, 30, 40, 50]

    # Sorted by name, not by date, the table lists children flat instead of folded under their parent.
    order = "orderByKey=attributes.run_name&orderByAsc=true"
    base = f"{ui}/#/experiments/{experiment['experiment_id']}/runs?{order}"
    table = browse(browser, base, tmp_path / "runs.png")
    chart = browse(browser, f"{base}&compareRunsMode=CHART", tmp_path / "chart.png")
    for png in ("runs.png", "chart.png"):
        image = (tmp_path / png).read_bytes()
        assert image.startswith(b"\x89PNG") and len(image) > 20_000, (png, len(image))  # not a blank page
    for name in ("sweep", *CHILDREN):  # every row rendered, the children with their Dataset column
        assert f">{name}<" in table, name
    assert table.count(shards.name) >= len(CHILDREN)
    assert all(f"{name} (val/loss)" in chart for name in CHILDREN[:2])  # the curves' legend (2 fit the card)
