"""Token shards: Arrow IPC stream files with one ``input_ids`` list column, one row per document.

The stream format is what ``datasets.Dataset.from_file`` memory-maps. Each shard holds a
single record batch, so its flat token buffer is one contiguous array that the loader
maps without copying; the price is that a shard is buffered in memory until it is
written (``shard_size_bytes`` bounds it). Files appear atomically (temp + rename).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pyarrow as pa

from data_prep.arrays import numeric_array
from pipeline.core.files import file_sha256

COLUMN = "input_ids"
SHARDS_SUBDIR = "shards"
OFFSET_BYTES = 4  # int32 list offsets


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 while every id fits in it, else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def shard_schema(dtype: np.dtype) -> pa.Schema:
    return pa.schema([(COLUMN, pa.list_(pa.from_numpy_dtype(dtype)))])


SHARD_FILE = re.compile(r"\.?(?:train|val)-[A-Za-z0-9_]+-(?P<task>\d{5,})-\d{5,}\.arrow(?:\.tmp)?")
"""A shard or its temp file; sources cannot hold '-', so the task number is unambiguous."""


def shard_name(split: str, source: str, task: int, index: int) -> str:
    return f"{split}-{source}-{task:05d}-{index:05d}.arrow"


def shard_task(name: str) -> int | None:
    """The task that wrote the shard (or temp file) ``name``; None for any other file."""
    match = SHARD_FILE.fullmatch(name)
    return int(match["task"]) if match else None


class ShardWriter:
    """Writes the shards of one (split, source, task), starting a new one at ``shard_size_bytes``.

    ``close()`` returns one manifest entry per shard written, with paths relative to
    ``output_dir`` (the directory that holds ``shards/``).
    """

    def __init__(
        self,
        output_dir: str | Path,
        *,
        split: str,
        source: str,
        task: int,
        dtype: np.dtype,
        shard_size_bytes: int,
    ):
        self.output_dir = Path(output_dir)
        self.split, self.source, self.task = split, source, task
        self.dtype = np.dtype(dtype)
        self.shard_size_bytes = shard_size_bytes
        self.schema = shard_schema(self.dtype)
        self.entries: list[dict] = []
        self._tokens: list[np.ndarray] = []
        self._lengths: list[np.ndarray] = []
        self._bytes = 0

    def add(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        """Append documents: ``tokens`` is their concatenation, ``lengths`` their token counts."""
        lengths = lengths.astype(np.int64, copy=False)
        doc_bytes = lengths * self.dtype.itemsize + OFFSET_BYTES
        first_doc = first_token = 0
        while first_doc < len(lengths):
            room = self.shard_size_bytes - self._bytes
            fit = int(np.searchsorted(np.cumsum(doc_bytes[first_doc:]), room, side="right"))
            if fit == 0 and self._bytes:
                self._flush()
                continue
            end_doc = first_doc + max(fit, 1)  # a document larger than a shard gets a shard of its own
            end_token = first_token + int(lengths[first_doc:end_doc].sum())
            self._tokens.append(tokens[first_token:end_token])
            self._lengths.append(lengths[first_doc:end_doc])
            self._bytes += int(doc_bytes[first_doc:end_doc].sum())
            first_doc, first_token = end_doc, end_token
            if first_doc < len(lengths):
                self._flush()

    def close(self) -> list[dict]:
        if self._lengths:
            self._flush()
        return self.entries

    def _flush(self) -> None:
        lengths = np.concatenate(self._lengths)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        values = np.concatenate(self._tokens)
        rows = pa.ListArray.from_arrays(
            numeric_array(offsets), numeric_array(values), type=self.schema.field(COLUMN).type
        )
        name = shard_name(self.split, self.source, self.task, len(self.entries))
        path = self.output_dir / SHARDS_SUBDIR / name
        tmp = path.with_name(f".{name}.tmp")
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, self.schema) as writer:
            writer.write_batch(pa.record_batch([rows], schema=self.schema))
        sha256 = file_sha256(tmp)
        os.replace(tmp, path)
        self.entries.append(
            {
                "path": f"{SHARDS_SUBDIR}/{name}",
                "split": self.split,
                "source": self.source,
                "docs": len(lengths),
                "tokens": len(values),
                "sha256": sha256,
            }
        )
        self._tokens, self._lengths, self._bytes = [], [], 0
