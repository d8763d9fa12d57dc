"""An input that cannot be read even after retries is recorded and reported, never half written and
never fatal to the others; a rerun retries only it (``data_prep.failures``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from flaky_server import FlakyServer

from data_prep.config import PrepConfig, RemoteConfig
from data_prep.document import Document
from data_prep.failures import InputsFailed, failure_message, failure_result
from data_prep.inputs import RemoteInputError, RetryPolicy
from data_prep.output_guard import check_same_run
from data_prep.prep import run_prep
from data_prep.stats import merge_tasks
from data_prep.writers.parquet import ParquetWriter
from pipeline.core.errors import ConfigError

NO_DEDUP = ["dedup.exact=false", "dedup.url=false", "dedup.minhash.enabled=false"]
FAST = ["remote.attempts=2", "remote.backoff_s=0.001", "remote.max_wait_s=0.01", "remote.timeout_s=5"]


def test_the_error_line_names_each_failure_up_to_three():
    one = failure_message({"u1": "cannot read http://h/a.warc.gz at byte 7 after 6 attempts: timed out"}, 4)
    assert one == (
        "1 of 4 inputs could not be read and is not in docs/: cannot read http://h/a.warc.gz at byte 7 "
        "after 6 attempts: timed out; the other 3 went through every stage (stats.json: read/remote_failed); "
        "rerun the same command to retry only it"
    )
    many = failure_message({f"u{i}": f"cannot read http://h/{i}" for i in range(5)}, 9)
    assert many.startswith("5 of 9 inputs could not be read and are not in docs/: cannot read http://h/0; ")
    assert "http://h/2 (and 2 more); the other 4 went" in many and "http://h/3" not in many
    assert many.endswith("retry only them") and "\n" not in many


def test_a_failed_input_counts_as_one_input_and_one_error_in_every_total():
    done = {
        "path": "/a.jsonl",
        "format": "jsonl",
        "seconds": 1.0,
        "stages": {
            "read": {"input": 3, "kept": 3, "dropped": {}, "errors": {}, "bytes": 30, "seconds": 0.1},
            "quality": {
                "input": 3,
                "kept": 2,
                "dropped": {"short": 1},
                "errors": {},
                "bytes": 20,
                "seconds": 0,
            },
        },
    }
    error = RemoteInputError("cannot read http://h/b.jsonl at byte 0 after 6 attempts: HTTP 503")
    failed = failure_result("http://h/b.jsonl", "jsonl", error, 0.5)
    stats = merge_tasks({"a": done, "b": failed})
    assert stats["stages"]["read"]["input"] == 4 and stats["stages"]["read"]["kept"] == 3
    assert stats["stages"]["read"]["errors"]["remote_failed"] == {"count": 1, "examples": [str(error)]}
    assert stats["stages"]["quality"]["input"] == 3  # nothing of the failed input went on
    totals = stats["totals"]
    assert totals["input"] == totals["kept"] + sum(totals["dropped"].values()) + sum(
        totals["errors"].values()
    )
    assert totals["errors"] == {"read/remote_failed": 1}
    assert stats["tasks"]["b"] == {
        "path": "http://h/b.jsonl",
        "format": "jsonl",
        "input": 1,
        "kept": 0,
        "seconds": 0.5,
    }


def test_remote_config_builds_the_retry_policy_and_is_checked():
    cfg = PrepConfig.load(None, ["input=[x]", "output=o", "remote.attempts=3", "remote.timeout_s=0.5"])
    assert cfg.remote.build() == RetryPolicy(attempts=3, backoff=1.0, max_wait=30.0, timeout=0.5)
    assert RemoteConfig().build() == RetryPolicy()  # the defaults are the reader's own
    for override, key in [
        ("remote.attempts=0", "remote.attempts"),
        ("remote.timeout_s=0", "remote.timeout_s"),
    ]:
        with pytest.raises(ConfigError, match=key):
            PrepConfig.load(None, ["input=[x]", "output=o", override])


def test_a_rerun_may_change_the_remote_keys(tmp_path):
    cfg = PrepConfig.load(None, ["input=[x]", f"output={tmp_path}"])
    cfg.save(tmp_path / "config.yaml")
    check_same_run(tmp_path, PrepConfig.load(None, ["input=[x]", f"output={tmp_path}", *FAST]))


def test_a_write_whose_source_fails_part_way_leaves_no_file(tmp_path):
    def docs():
        for i in range(7):
            yield Document(id=str(i), text=f"doc {i}", source="s", url="", metadata={})
        raise RemoteInputError("cannot read http://h/x at byte 99 after 6 attempts: timed out")

    writer = ParquetWriter(tmp_path, "task", docs_per_shard=3)
    with pytest.raises(RemoteInputError):
        writer.write(docs())
    assert list(tmp_path.iterdir()) == [] and writer.paths == []


def test_without_dedup_a_dead_url_is_reported_and_a_rerun_adds_only_it(tmp_path):
    """The dedup-off path (prep writes docs/ itself) and a permanent HTTP error (404: not retried)."""
    local = tmp_path / "local.jsonl"
    lines = [json.dumps({"id": f"r{i}", "text": f"remote document {i}"}) for i in range(5)]
    local.write_text("\n".join(json.dumps({"id": f"l{i}", "text": f"local {i}"}) for i in range(5)) + "\n")
    with FlakyServer({"/r.jsonl": "\n".join(lines).encode()}, broken={"/r.jsonl": 404}) as server:
        args = [f"input=[{local},{server.url('r.jsonl')}]", *NO_DEDUP, *FAST, "quality.enabled=false"]
        args += ["repetition.enabled=false", "c4.enabled=false", "language.enabled=false"]
        out = tmp_path / "out"
        with pytest.raises(InputsFailed, match=r"1 of 2 inputs .* HTTP 404") as failure:
            run_prep(PrepConfig.load(None, [*args, f"output={out}"]))
        assert server.requests == [("/r.jsonl", None)]  # a 404 is not retried
        assert json.loads((out / "stats.json").read_text()) == failure.value.stats
        assert failure.value.stats["totals"]["kept"] == 5
        assert [p.name.split("-")[0] for p in (out / "docs").iterdir()] == ["local.jsonl"]
        server.heal()
        requests = len(server.requests)
        stats = run_prep(PrepConfig.load(None, [*args, f"output={out}"]))
        assert [path for path, _ in server.requests[requests:]] == ["/r.jsonl"]
        whole = run_prep(PrepConfig.load(None, [*args, f"output={tmp_path / 'whole'}"]))
    assert _digests(out) == _digests(tmp_path / "whole")
    assert _untimed(stats["totals"]) == _untimed(whole["totals"])


def _digests(output: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((output / "docs").iterdir())}


def _untimed(totals: dict) -> dict:
    return {
        key: value
        for key, value in totals.items()
        if key not in ("seconds", "wall_seconds", "docs_per_second")
    }
