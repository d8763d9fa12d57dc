"""Write documents to ``docs/<task>-<shard>.parquet`` (DESIGN §4).

Each shard streams to a hidden temp file in row groups and is renamed into place
when complete, so a reader (or a rerun) never sees a half-written shard: what
exists under its final name is whole. Memory is one row group, not one shard.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from time import perf_counter

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from data_prep.arrays import integers, string_array
from data_prep.document import Document
from data_prep.stats import StageStats

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("text", pa.string()),
        ("source", pa.string()),
        ("url", pa.string()),
        ("metadata", pa.string()),
    ]
)
ROW_GROUP_DOCS = 2_000
_metadata_json = json.JSONEncoder(ensure_ascii=False, sort_keys=True).encode
"""``json.dumps(metadata, ensure_ascii=False, sort_keys=True)`` without building an encoder per call."""


def text_bytes(table: pa.Table) -> int:
    """UTF-8 bytes of a table's ``text`` column: what a stage that kept these rows books."""
    return sum(int(integers(pc.binary_length(chunk)).sum()) for chunk in table.column("text").chunks)


def shard_path(docs_dir: Path, task: str, shard: int) -> Path:
    return docs_dir / f"{task}-{shard:05d}.parquet"


def task_outputs(docs_dir: Path, task: str) -> list[Path]:
    """Every file a (possibly interrupted) run of ``task`` may have left, finished or not, in shard order.

    Probed name by name (two stats a shard), not listed: a crawl's prep has one task per input, and listing
    the shared directory once per task is quadratic (100,000 inputs: 10^10 names matched). Sound because
    a run leaves a prefix: the writer creates shards in order, and ``_discard`` and
    ``remove_task_outputs`` delete the last first, so what a kill leaves is shards ``0..k-1`` and maybe
    shard ``k``'s temp file."""
    found: list[Path] = []
    for index in itertools.count():
        final = shard_path(docs_dir, task, index)
        present = [path for path in (final, _temp_of(final)) if path.exists()]
        if not present:
            return found
        found += present


def remove_task_outputs(docs_dir: Path, task: str) -> None:
    """Delete what an earlier run of ``task`` left, the last shard first (what a kill here leaves is still a
    prefix, found by the next ``task_outputs``)."""
    for leftover in reversed(task_outputs(docs_dir, task)):
        leftover.unlink()


def _temp_of(final: Path) -> Path:
    """Where a shard is written before it is renamed into place (hidden, so no reader takes it for one)."""
    return final.with_name(f".{final.name}.tmp")


class ParquetWriter:
    """Consumes documents into shards of ``docs_per_shard`` rows; counts them as the ``write`` stage."""

    name = "write"

    def __init__(
        self,
        docs_dir: Path,
        task: str,
        docs_per_shard: int,
        on_rows: Callable[[pa.Table], None] | None = None,
    ) -> None:
        self.docs_dir = docs_dir
        self.on_rows = on_rows
        """Called with each row group once written (the dedup keys are computed from them)."""
        self.task = task
        self.docs_per_shard = docs_per_shard
        self.stats = StageStats()
        self.paths: list[Path] = []
        self._writer: pq.ParquetWriter | None = None
        self._rows_in_shard = 0

    def write(self, docs: Iterable[Document]) -> list[Path]:
        """Write every document; returns the finished shards (none if no document came)."""
        return self.write_tables(self._tables(docs))

    def _discard(self) -> None:
        """Delete what a write that failed part-way (its documents' source failed) had written: an
        input is in the output whole or not at all."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        for path in reversed(self.paths):  # the last first: a kill here leaves a prefix (task_outputs)
            _temp_of(path).unlink(missing_ok=True)
            path.unlink(missing_ok=True)
        self.paths = []

    def write_tables(self, tables: Iterable[pa.Table]) -> list[Path]:
        """Rows in ``SCHEMA`` (``write``'s documents, or a filtered shard's rows), cut into row groups of
        ``ROW_GROUP_DOCS`` within shards of ``docs_per_shard``; returns the finished shards."""
        self.docs_dir.mkdir(parents=True, exist_ok=True)
        parts: list[pa.Table] = []
        rows = 0
        try:
            for table in tables:
                self.stats.input += table.num_rows
                while table.num_rows:
                    room = min(ROW_GROUP_DOCS, self.docs_per_shard - self._rows_in_shard)
                    parts.append(table.slice(0, room - rows))
                    rows += parts[-1].num_rows
                    table = table.slice(parts[-1].num_rows)
                    if rows == room:
                        self._write_rows(pa.concat_tables(parts).combine_chunks())
                        parts, rows = [], 0
            if parts:
                self._write_rows(pa.concat_tables(parts).combine_chunks())
            self._close()
        except BaseException:
            self._discard()
            raise
        return self.paths

    def _tables(self, docs: Iterable[Document]) -> Iterator[pa.Table]:
        """The documents as tables of ``SCHEMA``, a row group's worth at a time."""
        batch: list[Document] = []
        for doc in docs:
            batch.append(doc)
            if len(batch) == ROW_GROUP_DOCS:
                yield self._table(batch)
                batch = []
        if batch:
            yield self._table(batch)

    def _table(self, batch: list[Document]) -> pa.Table:
        start = perf_counter()
        columns = [
            [d.id for d in batch],
            [d.text for d in batch],
            [d.source for d in batch],
            [d.url for d in batch],
            [_metadata_json(d.metadata) for d in batch],
        ]
        # string_array, not pa.array: that imports pandas (data_prep.arrays says why it matters).
        table = pa.Table.from_arrays([string_array(c) for c in columns], schema=SCHEMA)
        self.stats.seconds += perf_counter() - start
        return table

    def _write_rows(self, table: pa.Table) -> None:
        """One row group into the open shard (opened first if none is); closes it once full."""
        start = perf_counter()
        if self._writer is None:
            self.paths.append(shard_path(self.docs_dir, self.task, len(self.paths)))
            self._writer = pq.ParquetWriter(self._temp_path(), SCHEMA, compression="zstd")
        self._writer.write_table(table)
        self.stats.kept += table.num_rows
        self.stats.bytes += text_bytes(table)
        self._rows_in_shard += table.num_rows
        if self._rows_in_shard == self.docs_per_shard:
            self._close()
        self.stats.seconds += perf_counter() - start
        if self.on_rows is not None:
            self.on_rows(table)

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            os.replace(self._temp_path(), self.paths[-1])
            self._writer, self._rows_in_shard = None, 0

    def _temp_path(self) -> Path:
        return _temp_of(self.paths[-1])
