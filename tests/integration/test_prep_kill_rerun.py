"""SIGKILL ``lmpipe data prep --workers 2`` at several moments (timed, and after the first task of each
stage), rerun to completion: the docs and the stats equal an uninterrupted run's (DESIGN §4 completion
markers), nothing is left in ``filtered/``, and 1 worker writes what 2 do."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.demo.corpus import generate_split_corpus

pytestmark = pytest.mark.slow
LMPIPE = str(Path(sys.executable).with_name("lmpipe"))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[Path]:
    return generate_split_corpus(tmp_path_factory.mktemp("inputs"), web_files=4, n_entities=60)


def command(inputs: list[Path], output: Path, workers: int) -> list[str]:
    return [
        LMPIPE,
        "data",
        "prep",
        "--input",
        *map(str, inputs),
        "--output",
        str(output),
        "--workers",
        str(workers),
    ]


def run(inputs: list[Path], output: Path, workers: int = 2) -> None:
    result = subprocess.run(command(inputs, output, workers), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def docs(output: Path) -> dict[str, str]:
    """File name -> sha256 of every docs/*.parquet (and nothing else may be left in docs/)."""
    files = sorted((output / "docs").iterdir())
    assert all(p.suffix == ".parquet" and not p.name.startswith(".") for p in files), files
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def counts(output: Path) -> dict:
    stats = json.loads((output / "stats.json").read_text())
    return {name: (s["input"], s["kept"], s["dropped"], s["errors"]) for name, s in stats["stages"].items()}


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("reference")
    run(inputs, output)
    return output


def kill_after(inputs: list[Path], output: Path, moment) -> None:
    process = subprocess.Popen(
        command(inputs, output, 2),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        moment(output)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        try:  # pool workers are in the same group: make sure none survives
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def sleep(seconds: float):
    return lambda output: time.sleep(seconds)


def first_marker(stage: str):
    """Wait until a task of ``stage`` (prep, cluster, dedup) has finished."""

    def wait(output: Path) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any((output / "completions" / stage).glob("*.done")):
            time.sleep(0.005)

    return wait


@pytest.mark.parametrize(
    "moment",
    [
        sleep(0.3),
        sleep(0.8),
        sleep(1.5),
        first_marker("prep"),
        first_marker("cluster"),
        first_marker("dedup"),
    ],
    ids=["0.3s", "0.8s", "1.5s", "first-prep", "cluster-done", "first-dedup"],
)
def test_killed_run_reruns_to_the_same_output(inputs, reference, tmp_path, moment):
    output = tmp_path / "out"
    kill_after(inputs, output, moment)
    run(inputs, output)
    assert docs(output) == docs(reference)  # parquet bytes are deterministic: compared byte for byte
    assert counts(output) == counts(reference)
    assert not (output / "filtered").exists()


def test_one_worker_writes_what_two_do(inputs, reference, tmp_path):
    run(inputs, tmp_path / "out", workers=1)
    assert docs(tmp_path / "out") == docs(reference)
    assert counts(tmp_path / "out") == counts(reference)
