"""WET, WAT, JSONL, Parquet and saved Hugging Face datasets: read, counted, and told apart by name."""

from __future__ import annotations

import gzip
from pathlib import Path

import pyarrow as pa
import pytest

from data_prep.document import Document
from data_prep.formats import PRE_EXTRACTED, detect_format
from data_prep.readers import READERS
from data_prep.readers.jsonl import read_jsonl
from data_prep.readers.parquet import read_parquet
from data_prep.readers.warc import read_warc
from data_prep.stats import StageStats
from data_prep.writers.parquet import ParquetWriter
from pipeline.testing import require_module


def read(fmt: str, source) -> tuple[list[Document], StageStats]:
    stats = StageStats()
    return list(READERS[fmt](source, stats)), stats


@pytest.mark.parametrize(
    "name, fmt",
    [
        ("CC-MAIN-1.warc.wet.gz", "wet"),
        ("x.warc.wat.gz", "wat"),
        ("x.warc.gz", "warc"),
        ("x.warc", "warc"),
        ("x.jsonl", "jsonl"),
        ("x.jsonl.gz", "jsonl"),
        ("x.jsonl.zst", "jsonl"),
        ("x.parquet", "parquet"),
        ("enwiki-latest-pages-articles1.xml-p1p41242.bz2", "wiki"),
        ("x.xml", "wiki"),
        ("x.txt", None),
        ("https://data.commoncrawl.org/a/CC.warc.wet.gz", "wet"),
        ("https://h/x.parquet?sig=1", "parquet"),
    ],
)
def test_detect_format(name, fmt):
    assert detect_format(name) == fmt
    if "://" not in name:
        assert detect_format(Path(name)) == fmt


def test_wet_gives_extracted_text_with_language(shared_fixture):
    [doc], stats = read("wet", shared_fixture("warc/whirlwind.warc.wet.gz"))
    assert "wet" in PRE_EXTRACTED and "warc" not in PRE_EXTRACTED
    assert (stats.input, stats.kept, stats.errors, stats.dropped) == (1, 1, {}, {})
    assert doc.source == "cc" and doc.url == "https://an.wikipedia.org/wiki/Escopete"
    assert doc.metadata["language"] == "spa" and doc.metadata["date"].startswith("2024-05")
    assert doc.metadata["refers_to"].startswith("urn:uuid:") and doc.id.startswith("urn:uuid:")
    assert "Escopete" in doc.text and "<" not in doc.text[:200]


def test_wat_is_skipped_cleanly(shared_fixture):
    docs, stats = read("wat", shared_fixture("warc/whirlwind.warc.wat.gz"))
    assert docs == [] and stats.errors == {} and stats.kept == 0
    assert stats.dropped == {"not_documents": stats.input}


def test_warc_reader_reads_a_wet_file_as_no_documents(shared_fixture):
    """A WET passed as --format warc has no responses: nothing, and no error."""
    stats = StageStats()
    assert list(read_warc(shared_fixture("warc/whirlwind.warc.wet.gz"), stats)) == [] and not stats.errors


def jsonl_lines() -> bytes:
    return (
        b'{"text": "first doc", "id": "a", "url": "https://x/1", "source": "web", "lang": "en"}\n'
        b'{"text": "second", "metadata": {"k": 1}}\n'
        b"\n"
        b'{"text": "broken"\n'
        b'{"text": "bad \xff utf8"}\n'
        b'{"id": "no text"}\n'
        b'{"text": "   "}\n'
        b'{"text": "last", "metadata": "{\\"m\\": 2}"}\n'
    )


def zstd(data: bytes) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as out:
        out.write(data)
    return sink.getvalue().to_pybytes()


@pytest.mark.parametrize(
    "suffix, encode", [(".jsonl", bytes), (".jsonl.gz", gzip.compress), (".jsonl.zst", zstd)]
)
def test_jsonl_counts_bad_lines_and_yields_the_rest(tmp_path, suffix, encode):
    path = tmp_path / f"d{suffix}"
    path.write_bytes(encode(jsonl_lines()))
    docs, stats = read("jsonl", path)
    assert [d.text for d in docs] == ["first doc", "second", "last"]
    assert docs[0].id == "a" and docs[0].source == "web" and docs[0].url == "https://x/1"
    assert docs[0].metadata == {"lang": "en"}
    assert docs[1].id == f"d{suffix}:2" and docs[1].source == "jsonl" and docs[1].metadata == {"k": 1}
    assert docs[2].metadata == {"m": 2}
    assert stats.input == 7 and stats.kept == 3 and stats.dropped == {"empty_text": 1}
    assert {k: e["examples"] for k, e in stats.errors.items()} == {
        "invalid_json": [f"{path}:4 (Expecting ',' delimiter at column 18)"],
        "invalid_utf8": [f"{path}:5 (invalid start byte at byte 14)"],
        "missing_text": [f"{path}:6 (no string 'text' field)"],
    }


def test_jsonl_cut_gzip_keeps_what_came_before(tmp_path):
    data = gzip.compress(b"".join(b'{"text": "doc %d"}\n' % i for i in range(2000)))
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    docs, stats = read("jsonl", path)
    assert 0 < len(docs) < 2000 and list(stats.errors) == ["truncated_file"]
    assert stats.input == stats.kept + 1


def test_jsonl_fields_are_configurable(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"content": "hello", "doc_id": 7}\n')
    [doc] = read_jsonl(path, StageStats(), text_key="content", id_key="doc_id")
    assert (doc.text, doc.id) == ("hello", "7")


def test_jsonl_lone_surrogates_become_replacement_characters_and_reach_parquet(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text(
        '{"text": "half \\udc80 pair", "url": "https://x/\\uD800", "metadata": {"k": "\\udfff"}}\n'
        '{"text": "a whole pair \\ud83d\\ude00 stays"}\n'
    )
    docs, stats = read("jsonl", path)
    assert [doc.text for doc in docs] == ["half \ufffd pair", "a whole pair \U0001f600 stays"]
    assert docs[0].url == "https://x/\ufffd" and docs[0].metadata == {"k": "\ufffd"}
    assert stats.counts == {"lone_surrogates": 1} and stats.kept == 2
    [shard] = ParquetWriter(tmp_path / "docs", "t", 10).write(iter(docs))  # Arrow takes only UTF-8
    assert read("parquet", shard)[0][0].text == "half \ufffd pair"


def test_parquet_round_trip_with_our_writer(tmp_path):
    docs = [
        Document(f"id{i}", f"text {i} é", "cc" if i % 2 else "wiki", f"https://x/{i}", {"i": i, "w": "x"})
        for i in range(2500)
    ]
    [shard, *_] = ParquetWriter(tmp_path / "docs", "t", 10_000).write(iter(docs))
    back, stats = read("parquet", shard)
    assert back == docs and stats.input == stats.kept == 2500 and not stats.errors


def test_parquet_without_text_column_is_one_clear_error(tmp_path):
    import pyarrow.parquet as pq

    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"content": ["a", "b"], "id": ["1", "2"]}), path)
    docs, stats = read("parquet", path)
    assert docs == [] and stats.errors == {
        "missing_text_column": {"count": 1, "examples": [f"{path} (no 'text' column; it has: content, id)"]}
    }


def test_parquet_that_is_not_parquet_is_an_error(tmp_path):
    path = tmp_path / "x.parquet"
    path.write_bytes(b"not parquet at all")
    docs, stats = read("parquet", path)
    assert docs == [] and list(stats.errors) == ["corrupt_file"]


def test_parquet_defaults_for_missing_columns(tmp_path):
    import pyarrow.parquet as pq

    path = tmp_path / "y.parquet"
    pq.write_table(pa.table({"text": ["a", None, "c"]}), path)
    stats = StageStats()
    docs = list(read_parquet(path, stats))
    assert (stats.input, stats.kept, stats.dropped) == (3, 2, {"empty_text": 1})
    assert [(d.id, d.source, d.url, d.metadata) for d in docs] == [
        ("y.parquet:0", "parquet", "", {}),
        ("y.parquet:2", "parquet", "", {}),
    ]


def test_saved_hf_dataset_reads_in_batches(tmp_path):
    datasets = require_module("datasets")
    rows = {
        "text": [f"doc {i}" for i in range(30)] + [""],
        "id": [f"r{i}" for i in range(31)],
        "extra": list(range(31)),
    }
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "ds"))
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"text": ["t"]}),
            "test": datasets.Dataset.from_dict({"text": ["u"]}),
        }
    ).save_to_disk(str(tmp_path / "dd"))
    assert detect_format(tmp_path / "ds") == detect_format(tmp_path / "dd") == "hf"
    stats = StageStats()
    docs = list(READERS["hf"](tmp_path / "ds", stats, batch_rows=7))
    assert [d.id for d in docs] == [f"r{i}" for i in range(30)] and docs[0].source == "hf"
    assert (stats.input, stats.kept, stats.dropped) == (31, 30, {"empty_text": 1})
    split_docs, _ = read("hf", tmp_path / "dd")
    assert [(d.text, d.metadata["split"], d.id) for d in split_docs] == [
        ("u", "test", "dd:test:0"),
        ("t", "train", "dd:train:0"),
    ]
    from data_prep.inputs import expand_inputs

    assert [(f.name, f.format) for f in expand_inputs([str(tmp_path / "ds")])] == [("ds", "hf")]
