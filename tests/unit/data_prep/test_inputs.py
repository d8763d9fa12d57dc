"""Remote and listed inputs: URLs read like local files, even when the connection drops, stalls or the
server answers 500 or 503 (a real server on 127.0.0.1 that fails on purpose: ``tests/flaky_server.py``)."""

from __future__ import annotations

import gzip
import socket
import time
from dataclasses import asdict
from pathlib import Path

import pytest
from flaky_server import DROP, STALL, FlakyServer

from data_prep import inputs
from data_prep.inputs import HttpFile, InputFile, RemoteInputError, RetryPolicy, expand_inputs, open_input
from data_prep.readers import READERS
from data_prep.stats import StageStats
from pipeline.testing import require_module

FAST = RetryPolicy(attempts=4, backoff=0.001, max_wait=0.01, timeout=5)


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(inputs, "DEFAULT_RETRY", FAST)


def read_all(fmt: str, source) -> tuple[list[dict], dict]:
    stats = StageStats()
    docs = [
        asdict(doc) if hasattr(doc, "__dataclass_fields__") else doc for doc in READERS[fmt](source, stats)
    ]
    return docs, stats.to_dict()


def same_as_local(fmt: str, path: Path, remote: str | InputFile) -> None:
    local_docs, local_stats = read_all(fmt, path)
    remote_docs, remote_stats = read_all(fmt, remote)
    url = inputs.location_of(remote)
    for doc in local_docs + remote_docs:
        doc["metadata"].pop("warc_file", None)
    assert local_docs and remote_docs == local_docs
    local_stats.pop("seconds"), remote_stats.pop("seconds")
    assert remote_stats == {
        **local_stats,
        "errors": {
            kind: {**e, "examples": [x.replace(str(path), url) for x in e["examples"]]}
            for kind, e in local_stats["errors"].items()
        },
    }


@pytest.mark.parametrize("drops", [0, 3])
def test_remote_generated_warc_and_wiki_match_local_despite_drops(corpus, drops):
    files = {"/c.warc.gz": corpus.warc.read_bytes(), "/w.xml.bz2": corpus.wiki.read_bytes()}
    with FlakyServer(files, faults={"*": [DROP] * drops}, cut_after=4096) as server:
        same_as_local("warc", corpus.warc, server.url("c.warc.gz"))
        same_as_local("wiki", corpus.wiki, server.url("w.xml.bz2"))
    if drops:
        resumed = [r for _, r in server.requests if r and r != "bytes=0-"]
        assert resumed, "the reader resumed with a Range request"


@pytest.mark.parametrize(
    "name", ["warc/whirlwind.warc.gz", "warc/resiliparse-warcfile.warc.gz", "warc/whirlwind.warc.wet.gz"]
)
def test_remote_real_files_match_local_when_connection_drops(shared_fixture, name):
    path = shared_fixture(name)
    fmt = "wet" if name.endswith(".wet.gz") else "warc"
    with FlakyServer({"/f": path.read_bytes()}, faults={"*": [DROP, DROP]}, cut_after=700) as server:
        same_as_local(fmt, path, server.url("f"))


def test_server_without_range_support_still_resumes(corpus):
    with FlakyServer(
        {"/c.warc.gz": corpus.warc.read_bytes()}, faults={"*": [DROP, DROP]}, cut_after=5000, ranges=False
    ) as server:
        same_as_local("warc", corpus.warc, server.url("c.warc.gz"))


def test_http_file_seeks_and_reads_ranges():
    data = bytes(range(256)) * 100
    with FlakyServer({"/d": data}, faults={"*": [DROP]}, cut_after=10) as server:
        with open_input(server.url("d")) as f:
            assert f.read(300) == data[:300]
            f.seek(-50, 2)
            assert f.read() == data[-50:]
            f.seek(12345)
            assert f.read(10) == data[12345:12355]
            assert f.seek(0, 2) == len(data) and f.read() == b""
        raw = HttpFile(server.url("d"), FAST)
        raw.seek(len(data))
        assert raw.read(10) == b""


def test_unreachable_url_fails_with_one_clear_error_after_retries():
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x.warc.gz"
    start = time.perf_counter()
    with pytest.raises(RemoteInputError, match=rf"cannot read {url} at byte 0 after 4 attempts"):
        read_all("warc", url)
    assert time.perf_counter() - start < 5


def test_connection_that_keeps_dropping_fails_and_is_not_counted_as_damage(corpus):
    with FlakyServer(
        {"/c.warc.gz": corpus.warc.read_bytes()}, broken={"/c.warc.gz": DROP}, cut_after=0
    ) as server:
        stats = StageStats()
        with pytest.raises(RemoteInputError, match="after 4 attempts"):
            list(READERS["warc"](server.url("c.warc.gz"), stats))
        assert not stats.errors


def test_missing_remote_file_is_not_retried():
    with FlakyServer({}) as server:
        with pytest.raises(RemoteInputError, match=r"HTTP 404"):
            read_all("jsonl", server.url("nope.jsonl"))
        assert len(server.requests) == 1


def test_500_503_a_stall_and_a_drop_in_a_row_are_retried_and_resumed(corpus):
    """Every fault of the faults test, on one file: the read resumes after each, from the byte reached
    (the bytes that came before a stall are kept)."""
    policy = RetryPolicy(attempts=4, backoff=0.001, max_wait=0.01, timeout=0.5)
    faults = {"/c.warc.gz": [500, 503, STALL, DROP, 503]}
    with FlakyServer({"/c.warc.gz": corpus.warc.read_bytes()}, faults=faults, cut_after=3000) as server:
        url = server.url("c.warc.gz")
        start = time.perf_counter()
        same_as_local("warc", corpus.warc, InputFile(url, "c.warc.gz", "warc", policy))
        assert time.perf_counter() - start < 5, "the stall lasted the socket timeout, not the server's 5 s"
        assert not server.pending()
    ranges = [byte_range for _, byte_range in server.requests]
    assert ranges[:3] == [None, None, None]  # 500, 503, then the answer that stalls after 3000 bytes
    assert "bytes=3000-" in ranges and ranges.count("bytes=6000-") >= 2  # after the stall; the drop, the 503


def test_retry_waits_back_off_and_honour_retry_after_up_to_max_wait():
    policy = RetryPolicy(attempts=6, backoff=1.0, max_wait=30.0)
    assert [policy.wait(n) for n in (1, 2, 3, 6, 9)] == [1.0, 2.0, 4.0, 30.0, 30.0]
    assert policy.wait(1, retry_after=10.0) == 10.0
    assert policy.wait(3, retry_after=2.0) == 4.0  # the backoff is longer
    assert policy.wait(1, retry_after=600.0) == 30.0  # never past max_wait: no hang on a large Retry-After
    assert inputs.retry_after_seconds(" 120 ") == 120.0
    assert inputs.retry_after_seconds("Wed, 21 Oct 2026 07:28:00 GMT") is None
    assert inputs.retry_after_seconds(None) is None


def test_a_503_retry_after_sets_the_wait(monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr(inputs.time, "sleep", waits.append)
    policy = RetryPolicy(attempts=4, backoff=0.001, max_wait=5.0, timeout=5)
    with FlakyServer({"/d": b"x" * 100}, faults={"/d": [503, 500]}, retry_after=3) as server:
        with open_input(server.url("d"), retry=policy) as f:
            assert f.read() == b"x" * 100
    assert waits == [3.0, 0.002]


def test_s3_without_s3fs_says_what_to_install():
    require_module("fsspec")
    try:
        import s3fs  # noqa: F401

        pytest.skip("s3fs is installed")
    except ImportError:
        pass
    with pytest.raises(RemoteInputError, match="pip install s3fs"):
        with open_input("s3://bucket/x.warc.gz"):
            pass


# --- expand_inputs -------------------------------------------------------------------------


def test_expand_local_files_globs_and_dirs(tmp_path):
    (tmp_path / "b.warc.gz").write_bytes(b"x")
    (tmp_path / "a.jsonl").write_bytes(b"x")
    (tmp_path / "notes.txt").write_bytes(b"x")
    found = expand_inputs([str(tmp_path), str(tmp_path / "*.warc.gz")])
    assert [(f.name, f.format) for f in found] == [("a.jsonl", "jsonl"), ("b.warc.gz", "warc")]
    assert all(Path(f.location).is_absolute() and not f.is_remote for f in found)


def test_expand_errors_are_one_line(tmp_path):
    (tmp_path / "empty.warc.gz").write_bytes(b"")
    (tmp_path / "emptydir").mkdir()
    cases = [
        ([str(tmp_path / "nope.warc.gz")], FileNotFoundError, "input not found"),
        ([str(tmp_path / "*.xml")], FileNotFoundError, "no input file matches"),
        ([str(tmp_path / "emptydir")], ValueError, "no WARC files or wiki dumps in directory"),
        (["ftp://host/x.warc.gz"], ValueError, "unsupported URL scheme"),
    ]
    for patterns, error, message in cases:
        with pytest.raises(error, match=message):
            expand_inputs(patterns)
    # A zero-byte file is planned (its task reports it as read/empty_file), not a planning error.
    assert [f.name for f in expand_inputs([str(tmp_path / "empty.warc.gz")])] == ["empty.warc.gz"]


def test_urls_are_kept_as_they_are():
    found = expand_inputs(
        [
            "https://h.example/a/CC-1.warc.wet.gz?x=1",
            "s3://b/c/d.parquet",
            "https://h.example/a/CC-1.warc.wet.gz?x=1",
        ]
    )
    assert found == [
        InputFile("https://h.example/a/CC-1.warc.wet.gz?x=1", "CC-1.warc.wet.gz", "wet"),
        InputFile("s3://b/c/d.parquet", "d.parquet", "parquet"),
    ]
    assert found[0].is_remote


def test_paths_gz_listing_expands_like_common_crawl(tmp_path):
    listing = tmp_path / "wet.paths.gz"
    local = tmp_path / "local.jsonl"
    local.write_text('{"text": "x"}\n')
    listing.write_bytes(
        gzip.compress(
            b"crawl-data/CC-MAIN-2024-22/segments/1/wet/A.warc.wet.gz\n"
            b"crawl-data/CC-MAIN-2024-22/segments/1/wat/B.warc.wat.gz\n\n"
            + f"https://mirror.example/C.warc.gz\n{local}\n".encode()
        )
    )
    found = expand_inputs([str(listing)])
    assert [(f.location, f.format) for f in found] == [
        ("https://data.commoncrawl.org/crawl-data/CC-MAIN-2024-22/segments/1/wet/A.warc.wet.gz", "wet"),
        ("https://data.commoncrawl.org/crawl-data/CC-MAIN-2024-22/segments/1/wat/B.warc.wat.gz", "wat"),
        ("https://mirror.example/C.warc.gz", "warc"),
        (str(local), "jsonl"),
    ]
    plain = tmp_path / "x.paths"
    plain.write_text("a/b.warc.gz\n")
    assert (
        expand_inputs([str(plain)], paths_prefix="s3://commoncrawl/")[0].location
        == "s3://commoncrawl/a/b.warc.gz"
    )
    with pytest.raises(ValueError, match="remote .paths listings"):
        expand_inputs(["https://data.commoncrawl.org/crawl-data/CC-MAIN-2024-22/wet.paths.gz"])


def test_listing_served_files_read_end_to_end(tmp_path, corpus):
    with FlakyServer({"/data/c.warc.gz": corpus.warc.read_bytes()}, faults={"*": [DROP]}) as server:
        listing = tmp_path / "warc.paths"
        listing.write_text("data/c.warc.gz\n")
        [found] = expand_inputs([str(listing)], paths_prefix=server.url(""))
        docs, _ = read_all(found.format, found)
        local, _ = read_all("warc", corpus.warc)
        assert [d["id"] for d in docs] == [d["id"] for d in local]


def test_remote_jsonl_zst_and_parquet_match_local(tmp_path, corpus):
    import pyarrow as pa
    import pyarrow.parquet as pq

    lines = b"".join(b'{"text": "document number %d", "id": "d%d"}\n' % (i, i) for i in range(3000))
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as out:
        out.write(lines)
    jsonl = tmp_path / "d.jsonl.zst"
    jsonl.write_bytes(sink.getvalue().to_pybytes())
    parquet = tmp_path / "d.parquet"
    pq.write_table(
        pa.table({"id": [f"d{i}" for i in range(3000)], "text": [f"doc {i}" for i in range(3000)]}),
        parquet,
        row_group_size=500,
    )
    with FlakyServer(
        {"/d.jsonl.zst": jsonl.read_bytes(), "/d.parquet": parquet.read_bytes()},
        faults={"*": [DROP] * 3},
        cut_after=2000,
    ) as server:
        same_as_local("jsonl", jsonl, server.url("d.jsonl.zst"))
        same_as_local("parquet", parquet, server.url("d.parquet"))
