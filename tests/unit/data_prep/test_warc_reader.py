"""The WARC reader: HTML responses out, everything else counted, damage survived."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import pytest

from data_prep.readers.warc import read_warc
from data_prep.stats import StageStats


def read(path: Path) -> tuple[list, StageStats]:
    stats = StageStats()
    return list(read_warc(path, stats)), stats


def gzip_members(data: bytes) -> list[tuple[int, int]]:
    """(offset, length) of each gzip member: one WARC record each, in our files as in Common Crawl's."""
    members, position = [], 0
    while position < len(data):
        inflater = zlib.decompressobj(31)
        inflater.decompress(data[position:])
        length = len(data) - position - len(inflater.unused_data)
        members.append((position, length))
        position += length
    return members


def response_members(data: bytes) -> list[tuple[int, int]]:
    return [
        (start, length)
        for start, length in gzip_members(data)
        if b"WARC-Type: response" in gzip.decompress(data[start : start + length])[:200]
    ]


def test_generated_warc_yields_every_html_response(corpus):
    docs, stats = read(corpus.warc)
    expected = corpus.expected
    assert len(docs) == stats.kept == expected["web_responses"] - expected["non_html"]
    assert stats.input == expected["web_responses"]
    assert stats.dropped == {"not_html": expected["non_html"]}
    assert not stats.errors
    doc = docs[0]
    assert doc.source == "cc" and doc.url.startswith("https://") and doc.id.startswith("urn:uuid:")
    assert doc.metadata["warc_file"] == corpus.warc.name and doc.metadata["date"].startswith("2024-05-18")
    assert "<html" in doc.text  # raw HTML: extraction is the next stage


def test_charset_from_the_http_header_wins_over_a_wrong_meta(corpus):
    """The planted Latin-1 German pages declare utf-8 in <meta> and iso-8859-1 in the header."""
    docs, _ = read(corpus.warc)
    german = [d.text for d in docs if ".de.example" in d.url]
    assert german
    assert all("\ufffd" not in text for text in german)
    assert any("gegründet" in text for text in german)


def test_uncompressed_warc_reads_the_same(corpus, tmp_path):
    plain = tmp_path / "plain.warc"
    plain.write_bytes(gzip.decompress(corpus.warc.read_bytes()))
    gz_docs, _ = read(corpus.warc)
    plain_docs, stats = read(plain)
    assert [d.id for d in plain_docs] == [d.id for d in gz_docs]
    assert [d.text for d in plain_docs] == [d.text for d in gz_docs]
    assert not stats.errors


def test_corrupt_gzip_member_is_counted_and_skipped(corpus, tmp_path):
    data = bytearray(corpus.warc.read_bytes())
    start, length = response_members(bytes(data))[5]
    for i in range(start + 40, start + length - 20):
        data[i] ^= 0x5A
    broken = tmp_path / "corrupt.warc.gz"
    broken.write_bytes(bytes(data))
    good_docs, _ = read(corpus.warc)
    docs, stats = read(broken)
    assert stats.errors["corrupt_stream"]["count"] == 1
    assert stats.errors["corrupt_stream"]["examples"][0].startswith(f"{broken}:{start} ")
    assert [d.id for d in docs] == [d.id for d in good_docs if d.metadata["offset"] != start]
    assert stats.input == stats.kept + sum(stats.dropped.values()) + 1


def test_truncated_file_keeps_the_complete_records(corpus, tmp_path):
    data = corpus.warc.read_bytes()
    start, length = response_members(data)[-1]
    cut = tmp_path / "cut.warc.gz"
    cut.write_bytes(data[: start + length // 2])
    good_docs, _ = read(corpus.warc)
    docs, stats = read(cut)
    assert stats.errors["truncated_record"]["count"] == 1
    assert stats.errors["truncated_record"]["examples"] == [f"{cut}:{start}"]
    assert [d.id for d in docs] == [d.id for d in good_docs if d.metadata["offset"] < start]


def test_a_file_that_is_not_a_warc_is_one_error_not_a_crash(tmp_path):
    junk = tmp_path / "junk.warc.gz"
    junk.write_bytes(gzip.compress(b"this is not a WARC file\r\n" * 20))
    docs, stats = read(junk)
    assert docs == []
    assert stats.errors["corrupt_stream"]["count"] == 1 and stats.input == 1


@pytest.mark.parametrize(
    "name, responses",
    [
        ("whirlwind.warc.gz", 1),
        ("resiliparse-warcfile.warc.gz", 16),
        ("cmoncrawl-mini.warc.gz", 1),
        ("dolma-sample-0000.warc.gz", 22),
    ],
)
def test_common_crawl_fixtures(shared_fixture, name, responses):
    docs, stats = read(shared_fixture(f"warc/{name}"))
    assert len(docs) == responses and not stats.errors
    assert all(d.url.startswith("http") and not d.url.startswith("<") for d in docs)  # wget writes <url>


def test_fixture_pages_are_decoded_from_their_charsets(shared_fixture):
    docs, _ = read(shared_fixture("warc/resiliparse-warcfile.warc.gz"))
    russian = next(d for d in docs if "01spb.ru" in d.url)  # served as windows-1251
    assert "компании" in russian.text
    chinese = next(d for d in read(shared_fixture("warc/cmoncrawl-mini.warc.gz"))[0])  # no charset header
    assert "首页" in chinese.text
