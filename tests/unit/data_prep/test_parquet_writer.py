"""docs/*.parquet: the DESIGN §4 columns, zstd, docs_per_shard rows a file, nothing half-written."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from data_prep.document import Document
from data_prep.writers.parquet import SCHEMA, ParquetWriter, task_outputs


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
        ".web-1-00002.parquet.tmp",
        "web-1-00000.parquet",
        "web-1-00001.parquet",
    ]
