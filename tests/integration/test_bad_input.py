"""Damaged and odd inputs through ``lmpipe data prep``: each is counted in stats.json where it is
(file:offset or file:line), the rest of the file still comes out, and the run exits 0."""

from __future__ import annotations

import bz2
import gzip
import json
import re
import resource
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_prep.readers.warc import read_warc
from data_prep.stats import StageStats
from pipeline.cli.main import main
from pipeline.demo.corpus import CorpusFiles, generate_corpus
from pipeline.testing import require_fixture


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> CorpusFiles:
    return generate_corpus(tmp_path_factory.mktemp("corpus"), seed=0, n_entities=40)


def prep(inputs: list[Path], output: Path, capsys) -> tuple[dict, str]:
    """``lmpipe data prep`` in-process: asserts exit 0, returns (stats.json, stderr)."""
    capsys.readouterr()
    code = main(["data", "prep", "--input", *map(str, inputs), "--output", str(output)])
    err = capsys.readouterr().err
    assert code == 0, err
    return json.loads((output / "stats.json").read_text()), err


def read_docs(output: Path) -> pa.Table:
    return pa.concat_tables(pq.read_table(p) for p in sorted((output / "docs").glob("*.parquet")))


def task_of(stats: dict, path: Path) -> dict:
    return next(t for t in stats["tasks"].values() if t["path"] == str(path.resolve()))


def examples(stats: dict, kind: str) -> list[str]:
    return stats["stages"]["read"]["errors"][kind]["examples"]


def balanced(stats: dict) -> None:
    totals = stats["totals"]
    assert totals["input"] == totals["kept"] + sum(totals["dropped"].values()) + sum(
        totals["errors"].values()
    )


# --- WARC building blocks -------------------------------------------------------------------


def members(data: bytes) -> list[tuple[int, bytes]]:
    """(offset, decompressed record) of each gzip member: one WARC record each."""
    out, position = [], 0
    while position < len(data):
        inflater = zlib.decompressobj(31)
        record = inflater.decompress(data[position:])
        out.append((position, record))
        position = len(data) - len(inflater.unused_data)
    return out


def html_responses(data: bytes) -> list[int]:
    """Indexes (into ``members``) of the text/html responses."""
    return [
        i
        for i, (_, rec) in enumerate(members(data))
        if b"WARC-Type: response" in rec[:300] and b"Content-Type: text/html" in rec
    ]


def warc_record(url: str, content_type: str, body: bytes, n: int) -> bytes:
    http = (
        f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    head = (
        f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Date: 2024-05-18T00:00:00Z\r\n"
        f"WARC-Record-ID: <urn:uuid:00000000-0000-4000-8000-{n:012d}>\r\nWARC-Target-URI: {url}\r\n"
        f"Content-Type: application/http; msgtype=response\r\nContent-Length: {len(http)}\r\n\r\n"
    ).encode()
    return gzip.compress(head + http + b"\r\n\r\n", compresslevel=1, mtime=0)


def html_body(data: bytes, index: int) -> tuple[str, bytes]:
    """(url, HTML body) of member ``index`` of a generated WARC."""
    record = members(data)[index][1]
    url = re.search(rb"WARC-Target-URI: (\S+)", record).group(1).decode()
    return url, record.split(b"\r\n\r\n", 2)[2].rstrip(b"\r\n")


def kept_page(data: bytes, clean_output: Path) -> tuple[str, bytes]:
    """(url, HTML body) of a web page the clean run kept: it passes every filter."""
    kept = set(read_docs(clean_output).column("url").to_pylist())
    return next(page for page in map(lambda i: html_body(data, i), html_responses(data)) if page[0] in kept)


@pytest.fixture(scope="module")
def clean(corpus, tmp_path_factory) -> tuple[dict, Path]:
    output = tmp_path_factory.mktemp("clean")
    code = main(["data", "prep", "--input", str(corpus.warc), str(corpus.wiki), "--output", str(output)])
    assert code == 0
    return json.loads((output / "stats.json").read_text()), output


def test_clean_run_prints_no_warning(clean, corpus, tmp_path, capsys):
    stats, output = clean
    assert stats["totals"]["errors"] == {}
    _, err = prep([corpus.warc], tmp_path / "out", capsys)
    assert "warning" not in err


# --- damaged WARC files -----------------------------------------------------------------------


def test_warc_truncated_mid_record(corpus, clean, tmp_path, capsys):
    data = corpus.warc.read_bytes()
    index = html_responses(data)[len(html_responses(data)) // 2]
    start, record = members(data)[index]
    cut = tmp_path / "cut.warc.gz"
    cut.write_bytes(data[: start + 300])  # into the record's gzip member
    stats, err = prep([cut, corpus.wiki], tmp_path / "out", capsys)
    read = stats["stages"]["read"]
    (kind,) = read["errors"]  # truncated_record, or corrupt_stream when the cut lands in the gzip data
    assert read["errors"][kind]["count"] == 1
    assert examples(stats, kind)[0].startswith(f"{cut}:{start}")
    wiki_kept = (
        stats["stages"]["read"]["kept"] - task_of(stats, cut)["input"]
    )  # (web input is html + not_html)
    assert task_of(stats, cut)["input"] == sum(
        1 for i, (_, r) in enumerate(members(data)) if i <= index and b"WARC-Type: response" in r[:300]
    )
    assert wiki_kept >= 0
    docs = read_docs(tmp_path / "out")
    web = [
        json.loads(m)
        for m, s in zip(docs.column("metadata").to_pylist(), docs.column("source").to_pylist())
        if s == "cc"
    ]
    assert web and all(m["offset"] < start for m in web)  # the records before the cut came out
    assert f"lmpipe: warning: 1 record could not be read (read/{kind} 1); see stats.json" in err
    balanced(stats)


def test_corrupt_gzip_member_in_the_middle(corpus, clean, tmp_path, capsys):
    data = bytearray(corpus.warc.read_bytes())
    index = html_responses(bytes(data))[len(html_responses(bytes(data))) // 2]
    start, record = members(bytes(data))[index]
    for i in range(start + 60, start + 400):
        data[i] ^= 0x5A
    broken = tmp_path / "corrupt.warc.gz"
    broken.write_bytes(bytes(data))
    stats, err = prep([broken], tmp_path / "out", capsys)
    clean_stats, clean_out = clean
    clean_task = task_of(clean_stats, corpus.warc)
    assert stats["stages"]["read"]["errors"]["corrupt_stream"]["count"] == 1
    assert examples(stats, "corrupt_stream")[0].startswith(f"{broken}:{start} ")
    assert task_of(stats, broken)["input"] == clean_task["input"]  # the spot stands for the one lost record
    assert stats["stages"]["read"]["kept"] == len(html_responses(corpus.warc.read_bytes())) - 1
    offsets = {json.loads(m)["offset"] for m in read_docs(tmp_path / "out").column("metadata").to_pylist()}
    assert max(offsets) > start  # records after the damage came out
    assert "read/corrupt_stream 1" in err
    balanced(stats)


@pytest.mark.parametrize("damage", ["bad_version", "bad_length", "no_length"])
def test_warc_record_with_a_malformed_header(corpus, tmp_path, capsys, damage):
    data = corpus.warc.read_bytes()
    responses = html_responses(data)
    index = responses[len(responses) // 2]
    all_members = members(data)
    start, record = all_members[index]
    length = re.search(rb"Content-Length: \d+\r\n", record).group(0)
    record = {
        "bad_version": record.replace(b"WARC/1.0", b"WARX/9.9", 1),
        "bad_length": record.replace(length, b"Content-Length: 12ab\r\n", 1),
        "no_length": record.replace(length, b"", 1),
    }[damage]
    bad = tmp_path / f"{damage}.warc.gz"
    bad.write_bytes(data[:start] + gzip.compress(record, mtime=0) + data[all_members[index + 1][0] :])
    stats, err = prep([bad], tmp_path / "out", capsys)
    errors = stats["stages"]["read"]["errors"]
    assert sum(e["count"] for e in errors.values()) == 1, errors
    (example,) = [e["examples"][0] for e in errors.values()]
    assert example.startswith(f"{bad}:{start}")
    assert stats["stages"]["read"]["kept"] == len(responses) - 1
    assert (
        stats["stages"]["read"]["input"]
        == stats["stages"]["read"]["kept"] + sum(stats["stages"]["read"]["dropped"].values()) + 1
    )  # the damaged record is counted once, not twice
    offsets = {json.loads(m)["offset"] for m in read_docs(tmp_path / "out").column("metadata").to_pylist()}
    assert max(offsets) > start and start not in offsets
    assert "lmpipe: warning: 1 record could not be read" in err


# --- odd payloads -------------------------------------------------------------------------------


def test_invalid_utf8_and_a_mislabelled_charset(corpus, tmp_path, capsys):
    data = corpus.warc.read_bytes()
    responses = html_responses(data)
    pages = [html_body(data, i) for i in responses[:3]]
    (url_ok, ok), (url_bad, bad), (url_latin, latin) = pages
    bad = bad.replace(b"</title>", b" \xff\xfe\x80\xc3</title>", 1)  # invalid UTF-8 bytes
    latin = latin.replace(
        b"</title>", " café naïve".encode("latin-1") + b"</title>", 1
    )  # latin-1 labelled utf-8
    path = tmp_path / "charsets.warc.gz"
    path.write_bytes(
        b"".join(
            warc_record(url, "text/html; charset=utf-8", body, n)
            for n, (url, body) in enumerate([(url_ok, ok), (url_bad, bad), (url_latin, latin)])
        )
    )
    stats, _ = prep([path], tmp_path / "out", capsys)
    read = stats["stages"]["read"]
    assert read["input"] == read["kept"] == 3 and not read["errors"]
    assert read["counts"] == {"charset_fallback": 2}
    docs = read_docs(tmp_path / "out")
    texts = dict(zip(docs.column("url").to_pylist(), docs.column("text").to_pylist()))
    assert set(texts) <= {url_ok, url_bad, url_latin}
    for text in texts.values():
        text.encode("utf-8")  # no lone surrogates reach the parquet
    assert stats["totals"]["errors"] == {}
    read_docs_ = list(read_warc(path, StageStats()))
    assert "café naïve" in read_docs_[2].text  # sniffed as latin-1/cp1252, not mojibake
    assert "\ufffd" not in read_docs_[0].text


def test_binary_responses_are_dropped_with_a_reason(corpus, clean, tmp_path, capsys):
    data = corpus.warc.read_bytes()
    url, page = kept_page(data, clean[1])
    pdf = b"%PDF-1.7\n" + bytes(range(256)) * 40
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
    path = tmp_path / "binary.warc.gz"
    path.write_bytes(
        warc_record("https://x.example/a.pdf", "application/pdf", pdf, 0)
        + warc_record("https://x.example/b.png", "image/png", png, 1)
        + warc_record("https://x.example/c.html", "text/html", pdf, 2)  # a PDF labelled HTML
        + warc_record("https://x.example/d.html", "text/html", png, 3)
        + warc_record(url, "text/html; charset=utf-8", page, 4)
    )
    stats, err = prep([path], tmp_path / "out", capsys)
    read = stats["stages"]["read"]
    assert read["dropped"] == {"not_html": 2, "binary_content": 2}
    assert read["kept"] == 1 and not read["errors"] and "warning" not in err
    assert read_docs(tmp_path / "out").column("url").to_pylist() == [url]


def test_a_50mb_html_record_completes_in_bounded_time_and_memory(corpus, clean, tmp_path):
    data = corpus.warc.read_bytes()
    url, page = kept_page(data, clean[1])
    paragraph = b"<p>" + b"The quick brown fox jumps over the lazy dog near the river bank. " * 15 + b"</p>\n"
    huge = b"<html><body>" + paragraph * (50_000_000 // len(paragraph)) + b"</body></html>"
    path = tmp_path / "huge.warc.gz"
    path.write_bytes(
        warc_record("https://x.example/huge.html", "text/html", huge, 0)
        + warc_record(url, "text/html; charset=utf-8", page, 1)
    )
    lmpipe = Path(sys.executable).with_name("lmpipe")
    start = time.monotonic()
    result = subprocess.run(
        [str(lmpipe), "data", "prep", "--input", str(path), "--output", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    seconds = time.monotonic() - start
    assert result.returncode == 0, result.stderr
    assert seconds < 120
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    assert peak_mb < 1500  # Linux: KiB; the peak of any child so far, so a loose bound
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    read = stats["stages"]["read"]
    assert read["input"] == 2 and read["dropped"] == {"too_large": 1} and read["kept"] == 1
    assert read_docs(tmp_path / "out").column("url").to_pylist() == [url]


# --- wiki dumps ---------------------------------------------------------------------------------


def test_utf16_wiki_dump_with_bom(corpus, tmp_path, capsys):
    dump = require_fixture("wiki/bgwiki-latest-pages-articles-shortened.xml.bz2")
    stats, err = prep([dump, corpus.warc], tmp_path / "out", capsys)
    task = task_of(stats, dump)
    assert task["input"] == 3
    assert stats["stages"]["read"]["dropped"]["not_article_namespace"] >= 2
    assert stats["totals"]["errors"] == {} and "warning" not in err


@pytest.mark.parametrize("compressed", [False, True])
def test_xml_dump_cut_off_without_closing_tags(corpus, tmp_path, capsys, compressed):
    xml = bz2.decompress(corpus.wiki.read_bytes())
    cut_at = xml.rfind(b"<page>", 0, len(xml) * 2 // 3) + 200
    path = tmp_path / ("cut.xml.bz2" if compressed else "cut.xml")
    path.write_bytes(bz2.compress(xml[:cut_at]) if compressed else xml[:cut_at])
    stats, err = prep([path, corpus.warc], tmp_path / "out", capsys)
    (example,) = examples(stats, "xml_parse")
    line = xml[:cut_at].count(b"\n") + 1
    assert re.fullmatch(rf"{re.escape(str(path))}:{line}:\d+ \(.*\)", example), example
    pages_before = xml[:cut_at].count(b"</page>")
    assert task_of(stats, path)["input"] == pages_before + 1
    assert stats["stages"]["read"]["kept"] > 0
    assert "read/xml_parse 1" in err
    balanced(stats)


# --- zero-byte files ----------------------------------------------------------------------------


def test_zero_byte_file_among_good_ones_is_counted_not_fatal(corpus, clean, tmp_path, capsys):
    empty = tmp_path / "empty.warc.gz"
    empty.touch()
    stats, err = prep([corpus.warc, empty, corpus.wiki], tmp_path / "out", capsys)
    assert examples(stats, "empty_file") == [f"{empty.resolve()}:0"]
    assert stats["totals"]["errors"] == {"read/empty_file": 1}
    assert stats["totals"]["kept"] == clean[0]["totals"]["kept"]
    assert task_of(stats, empty)["input"] == 1 and task_of(stats, empty)["kept"] == 0
    assert err.rstrip().endswith(
        "lmpipe: warning: 1 record could not be read (read/empty_file 1); see stats.json"
    )
    balanced(stats)


def test_missing_path_is_still_one_clear_error(corpus, tmp_path, capsys):
    code = main(
        [
            "data",
            "prep",
            "--input",
            str(corpus.warc),
            str(tmp_path / "nope.warc.gz"),
            "--output",
            str(tmp_path / "out"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == f"lmpipe: error: input not found: {tmp_path / 'nope.warc.gz'}"
    assert not (tmp_path / "out").exists()
