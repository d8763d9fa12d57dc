"""``lmpipe data prep`` over URLs of a real HTTP server on 127.0.0.1 that fails on purpose
(``tests/flaky_server.py``): connections cut mid-body, 500 and 503 answers, a body that stalls past the
socket timeout. The job retries and resumes with HTTP Range and writes what a read of the same files
from disk writes. A URL still failing after its last retry is reported (stats.json, one error line,
exit 1) while every other input is written; once the server is healed a rerun reads only that URL
and ends with the uninterrupted run's output. Nothing lost, nothing twice, no hang."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from faultjobs import LMPIPE, Job
from flaky_server import DROP, STALL, FlakyServer

from data_prep.config import PrepConfig
from data_prep.prep import run_prep
from pipeline.testing import require_fixture

pytestmark = [pytest.mark.faults, pytest.mark.slow]

FIXTURES = [
    "warc/dolma-sample-0000.warc.gz",  # 22 English web pages, 214 kB
    "warc/whirlwind.warc.wet.gz",  # a WET file (no extraction), 3 kB
    "wiki/enwiki-table-markup.xml.bz2",  # 5 Wikipedia articles, 64 kB
]
COPY = "a-copy-of-enwiki-table-markup.xml.bz2"
"""The same articles under a name that sorts first: dedup keeps its copies while it is there, so the
failed run keeps the other file's and the rerun must redo dedup across inputs to match."""
FAULTS = {
    "/dolma-sample-0000.warc.gz": [DROP, STALL, DROP],
    "/whirlwind.warc.wet.gz": [500, 503],
    "/enwiki-table-markup.xml.bz2": [503, STALL],
    f"/{COPY}": [DROP, 500],
}
CUT_AFTER = 20_000
"""Body bytes sent before a cut or a stall: mid-body in every file a DROP or STALL is scheduled for."""
FAST = ["remote.attempts=4", "remote.timeout_s=0.5", "remote.backoff_s=0.01", "remote.max_wait_s=0.05"]
"""Retries as a test can afford them; a 503's Retry-After (1 s) is cut to max_wait_s."""
JOB_TIMEOUT_S = 90


@pytest.fixture
def local_files(tmp_path) -> list[Path]:
    local = tmp_path / "local"
    local.mkdir()
    files = [Path(shutil.copyfile(require_fixture(name), local / Path(name).name)) for name in FIXTURES]
    return sorted([*files, Path(shutil.copyfile(files[-1], local / COPY))])


def prep(inputs: list[str], output: Path, log: str, *options: str) -> tuple[int, str]:
    """Run ``lmpipe data prep`` to its end (a hang fails the test): its exit code and its output."""
    command = [LMPIPE, "data", "prep", "--input", *inputs, "--output", str(output), *FAST, *options]
    job = Job.start(command, output.parent / log)
    return job.wait(timeout_s=JOB_TIMEOUT_S), job.output


def rows(output: Path) -> dict[str, list[dict]]:
    """Every docs/ row, by its input's file name and shard (the task name's hash of the path or URL
    left out): what a local and a remote run of the same files must agree on."""
    found: dict[str, list[dict]] = {}
    for path in sorted((output / "docs").glob("*.parquet")):
        key = re.sub(r"-[0-9a-f]{8}-(\d{5})\.parquet$", r"-\1", path.name)
        found[key] = pq.read_table(path).to_pylist()
    return found


def docs(output: Path) -> dict[str, str]:
    """docs/ file name -> sha256: runs over the same URLs must agree byte for byte."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((output / "docs").iterdir())}


def counts(stats: dict) -> dict:
    """What each stage did, without timings or the example locations (a path here, a URL there)."""
    return {
        name: (s["input"], s["kept"], s["dropped"], {kind: e["count"] for kind, e in s["errors"].items()})
        for name, s in stats["stages"].items()
    }


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("lmpipe: error:")]


def test_flaky_server_loses_nothing_and_a_dead_url_is_reported_then_retried(local_files, tmp_path):
    disk = {"input": [str(path) for path in local_files], "output": str(tmp_path / "disk")}
    from_disk = run_prep(PrepConfig.load(None, FAST, values=disk))
    served = {f"/{path.name}": path.read_bytes() for path in local_files}
    with FlakyServer(served, faults=FAULTS, cut_after=CUT_AFTER, stall_s=30) as server:
        urls = [server.url(name) for name in served]

        # Every fault once, in one job: the output is the local read's.
        code, output = prep(urls, tmp_path / "remote", "remote.log")
        assert code == 0, output[-3000:]
        assert not server.pending(), "every scheduled fault was served"
        resumed = {path for path, byte_range in server.requests if byte_range}
        assert resumed == {"/dolma-sample-0000.warc.gz", "/enwiki-table-markup.xml.bz2", f"/{COPY}"}
        assert rows(tmp_path / "remote") == rows(tmp_path / "disk")
        remote = json.loads((tmp_path / "remote" / "stats.json").read_text())
        assert counts(remote) == counts(from_disk)
        assert remote["totals"]["errors"] == from_disk["totals"]["errors"] == {}

        # One URL down for good: reported, every other input written, exit 1, one error line.
        server.take_down(f"/{COPY}", 503)
        outage = tmp_path / "outage"
        code, output = prep(urls, outage, "outage.log", "--workers", "2")
        assert code == 1, output[-3000:]
        [line] = error_lines(output)
        assert server.url(COPY) in line and "after 4 attempts" in line and "503" in line, line
        stats = json.loads((outage / "stats.json").read_text())
        assert stats["totals"]["errors"] == {"read/remote_failed": 1}
        [failed] = stats["failed"].values()
        assert failed["path"] == server.url(COPY) and "503" in failed["error"]
        # The copy's articles were duplicates of the other file's: all of them are still in docs/.
        assert stats["totals"]["kept"] == remote["totals"]["kept"]
        written = {key.rsplit("-", 1)[0] for key in rows(outage)}
        assert written == {"dolma-sample-0000.warc.gz", "enwiki-table-markup.xml.bz2"}
        assert (outage / "filtered").is_dir(), "kept for the rerun"

        # Healed: the rerun reads only the failed URL, then ends as the uninterrupted run did.
        server.heal()
        before = len(server.requests)
        code, output = prep(urls, outage, "rerun.log")
        assert code == 0, output[-3000:]
        assert {path for path, _ in server.requests[before:]} == {f"/{COPY}"}
        assert docs(outage) == docs(tmp_path / "remote")
        rerun = json.loads((outage / "stats.json").read_text())
        assert counts(rerun) == counts(remote) and "failed" not in rerun
        assert not (outage / "filtered").exists()
