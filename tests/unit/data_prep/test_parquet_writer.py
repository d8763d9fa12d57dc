"""docs/*.parquet: the DESIGN §4 columns, zstd, docs_per_shard rows a file, nothing half-written."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_prep.document import Document
from data_prep.writers.parquet import SCHEMA, ParquetWriter, remove_task_outputs, task_outputs


def docs(n: int) -> list[Document]:
    return [
        Document(
            f"id-{i}", f"text {i} é", "cc" if i % 2 else "wiki", f"https://e.org/{i}", {"n": i, "lang": "en"}
        )
        for i in range(n)
    ]


def test_shards_hold_docs_per_shard_rows_with_the_contract_schema(tmp_path):
    writer = ParquetWriter(tmp_path / "docs", "task-a", docs_per_shard=4)
    paths = writer.write(docs(10))
    assert [p.name for p in paths] == ["task-a-00000.parquet", "task-a-00001.parquet", "task-a-00002.parquet"]
    assert [pq.read_metadata(p).num_rows for p in paths] == [4, 4, 2]
    table = pa.concat_tables(pq.read_table(p) for p in paths)
    assert table.schema.equals(SCHEMA)
    assert table.schema.names == ["id", "text", "source", "url", "metadata"]
    assert all(t == pa.string() for t in table.schema.types)
    assert table.column("id").to_pylist() == [f"id-{i}" for i in range(10)]
    assert json.loads(table.column("metadata")[3].as_py()) == {"n": 3, "lang": "en"}
    assert pq.ParquetFile(paths[0]).metadata.row_group(0).column(0).compression == "ZSTD"
    assert writer.stats.kept == 10 and writer.stats.bytes == sum(len(d.text.encode()) for d in docs(10))


def test_no_temp_files_remain_and_no_docs_means_no_shard(tmp_path):
    docs_dir = tmp_path / "docs"
    ParquetWriter(docs_dir, "task-a", docs_per_shard=3).write(docs(3))
    assert sorted(p.name for p in docs_dir.iterdir()) == ["task-a-00000.parquet"]
    assert ParquetWriter(docs_dir, "task-b", docs_per_shard=3).write([]) == []
    assert task_outputs(docs_dir, "task-b") == []


def test_task_outputs_finds_finished_and_unfinished_shards_of_one_task_only(tmp_path):
    docs_dir = tmp_path / "docs"
    ParquetWriter(docs_dir, "web-1", docs_per_shard=2).write(docs(3))
    ParquetWriter(docs_dir, "web-10", docs_per_shard=2).write(docs(1))
    (docs_dir / ".web-1-00002.parquet.tmp").write_bytes(b"partial")
    assert [p.name for p in task_outputs(docs_dir, "web-1")] == [
        "web-1-00000.parquet",
        "web-1-00001.parquet",
        ".web-1-00002.parquet.tmp",
    ]


def test_leftovers_are_removed_last_shard_first_so_a_kill_midway_leaves_what_the_next_run_finds(
    tmp_path, monkeypatch
):
    """``task_outputs`` probes shard names in order instead of listing the directory (one listing per task
    is quadratic over a crawl): that is sound only while every run, killed anywhere, leaves a prefix."""
    docs_dir = tmp_path / "docs"
    ParquetWriter(docs_dir, "web-1", docs_per_shard=1).write(docs(3))
    ParquetWriter(docs_dir, "web-10", docs_per_shard=1).write(docs(2))
    (docs_dir / ".web-1-00003.parquet.tmp").write_bytes(b"partial")
    removed: list[str] = []
    unlink = Path.unlink
    monkeypatch.setattr(Path, "unlink", lambda self, **kw: (removed.append(self.name), unlink(self, **kw)))
    remove_task_outputs(docs_dir, "web-1")
    assert removed == [
        ".web-1-00003.parquet.tmp",
        "web-1-00002.parquet",
        "web-1-00001.parquet",
        "web-1-00000.parquet",
    ]
    assert sorted(p.name for p in docs_dir.iterdir()) == ["web-10-00000.parquet", "web-10-00001.parquet"]


def test_a_failed_write_deletes_its_shards_last_first(tmp_path, monkeypatch):
    ParquetWriter(tmp_path / "src", "s", docs_per_shard=3).write(docs(3))
    rows = pq.read_table(tmp_path / "src" / "s-00000.parquet")

    def failing():
        yield from (rows.slice(i, 1) for i in range(3))
        raise OSError("source gone")

    removed: list[str] = []
    unlink = Path.unlink
    monkeypatch.setattr(Path, "unlink", lambda self, **kw: (removed.append(self.name), unlink(self, **kw)))
    with pytest.raises(OSError, match="source gone"):
        ParquetWriter(tmp_path / "out", "t", docs_per_shard=1).write_tables(failing())
    assert [name for name in removed if not name.startswith(".")] == [
        "t-00002.parquet",
        "t-00001.parquet",
        "t-00000.parquet",
    ]
    assert list((tmp_path / "out").iterdir()) == []
