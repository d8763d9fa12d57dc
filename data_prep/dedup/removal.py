"""Deciding, over every task at once, which documents go; then dropping them task by task.

``plan_removals`` (the one ``cluster`` task of a run) numbers all documents globally in
(task name, position) order and marks as removed every document that is not the first
of its group, by one reason each, in this precedence:

- ``duplicate``: same folded-text hash as an earlier document;
- ``duplicate_url``: same normalised URL as an earlier document (sources in ``url_sources``);
- ``near_duplicate``: in a MinHash-LSH cluster whose keeper (its centre: ``minhash.near_duplicate_labels``)
  is another document.

It writes ``<dedup_dir>/remove/<task>.npy`` for every task that loses documents, an ``(k, 2)``
int64 array of (position in the task, reason code), sorted by position; a task without one loses
none (the directory is emptied first, so no earlier run's file can stand in). ``TaskRemovals``
then reads the task's filtered shards, in the same order, and drops the listed rows.

Memory: 16 bytes a document for exact keys, 8 for URL keys, and per band 16 (the column and
its sort order); the keys are memory-mapped (files over 1 MiB). ``minhash.py`` says how the
band search splits further when one machine is not enough.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from data_prep.arrays import numeric_array
from data_prep.config import DedupConfig
from data_prep.dedup.keys import key_height, key_rows, keys_of, keys_path, save_atomic
from data_prep.dedup.minhash import near_duplicate_labels
from data_prep.stats import StageStats
from data_prep.writers.parquet import text_bytes

MMAP_BYTES = 1 << 20
REASONS = ("duplicate", "duplicate_url", "near_duplicate")
"""Reason codes 1, 2, 3 (0 = kept), in precedence order."""


def removal_path(dedup_dir: Path, task: str) -> Path:
    return Path(dedup_dir) / "remove" / f"{task}.npy"


def task_removals(dedup_dir: Path, task: str) -> np.ndarray:
    """A task's (position, reason code) rows; none when the cluster stage wrote no file for it."""
    path = removal_path(dedup_dir, task)
    return np.load(path) if path.exists() else np.zeros((0, 2), np.int64)


def _not_first(keys: np.ndarray, eligible: np.ndarray | None = None) -> np.ndarray:
    """True for each row whose key equals that of an earlier (eligible) row."""
    n = len(keys)
    repeated = np.zeros(n, bool)
    rows = np.arange(n) if eligible is None else np.flatnonzero(eligible)
    if len(rows) == 0:
        return repeated
    _, first = np.unique(keys[rows], axis=0, return_index=True)  # index of each key's first occurrence
    repeated[rows] = True
    repeated[rows[first]] = False
    return repeated


def plan_removals(
    dedup_dir: Path, keys_dir: Path, tasks: Sequence[str], sizes: Sequence[int], cfg: DedupConfig
) -> dict[str, Any]:
    """Write ``remove/<task>.npy`` for every task that loses documents (``sizes``: each task's filtered
    document count); returns
    ``{"docs", "removed": {reason: n}, "clusters", "seconds"}``."""
    start = perf_counter()
    n = int(sum(sizes))
    reasons = np.zeros(n, np.uint8)

    rows, height = key_rows(cfg), key_height(cfg)
    # A task without documents has no keys file (TaskKeys.save).
    arrays = [
        _load(keys_path(keys_dir, task)) if size else np.zeros((height, 0), np.uint64)
        for task, size in zip(tasks, sizes)
    ]
    for task, array, size in zip(tasks, arrays, sizes):
        if array.shape != (height, size):
            raise ValueError(
                f"{keys_path(keys_dir, task)}: keys of shape {array.shape}, task has {size} docs"
            )

    def load(kind: str) -> list[np.ndarray]:
        return [keys_of(array, rows[kind], kind) for array in arrays]

    labels = np.arange(n)
    if cfg.minhash.enabled:
        labels = near_duplicate_labels(load("bands"), cfg.minhash.num_bands)
        reasons[labels != np.arange(n)] = 3
    if cfg.url:
        urls = np.concatenate(load("url")) if tasks else np.zeros(0, np.uint64)
        reasons[_not_first(urls, urls != 0)] = 2
    if cfg.exact:
        texts = np.concatenate(load("text")) if tasks else np.zeros((0, 2), np.uint64)
        reasons[_not_first(texts)] = 1
    # Counted after the exact and URL reasons took precedence: a cluster whose removals are all exact
    # duplicates is not reported as a near-duplicate cluster.
    clusters = len(np.unique(labels[reasons == 3]))
    offsets = np.cumsum(sizes) - np.asarray(sizes, np.int64)
    shutil.rmtree(Path(dedup_dir) / "remove", ignore_errors=True)
    for task, offset, size in zip(tasks, offsets.tolist(), sizes):
        codes = reasons[offset : offset + size]
        positions = np.flatnonzero(codes)
        if not len(positions):  # most tasks of a crawl: a file each would cost more than the rest
            continue
        save_atomic(
            removal_path(dedup_dir, task), np.stack([positions, codes[positions]], axis=1).astype(np.int64)
        )
    removed = {reason: int((reasons == code).sum()) for code, reason in enumerate(REASONS, start=1)}
    return {"docs": n, "removed": removed, "clusters": clusters, "seconds": round(perf_counter() - start, 3)}


def _load(path: Path) -> np.ndarray:
    """A keys file, memory-mapped when large: mapping costs a millisecond a file, reading a small one less."""
    return np.load(path, mmap_mode="r" if path.stat().st_size > MMAP_BYTES else None)


class TaskRemovals:
    """Drops the listed positions of one task's filtered rows, by their reason, and keeps the books
    of the ``dedup`` stage.

    It works on the shards' Arrow tables, not on documents: the rows go back to disk as they came,
    so turning each into a Python document (its metadata parsed from JSON) and back cost more than
    the rest of the stage. It must get the shards the task's keys were computed from, in order."""

    name = "dedup"

    def __init__(self, removals: np.ndarray) -> None:
        removals = np.asarray(removals, np.int64).reshape(-1, 2)
        self._positions = removals[:, 0]
        self._codes = removals[:, 1]
        self.stats = StageStats()

    @property
    def removes_any(self) -> bool:
        return bool(len(self._positions))

    @classmethod
    def for_task(cls, dedup_dir: Path, task: str) -> TaskRemovals:
        return cls(task_removals(dedup_dir, task))

    def kept_rows(self, shards: Sequence[Path]) -> Iterator[pa.Table]:
        """Each shard's rows, in order, without the listed ones."""
        first = 0
        for shard in shards:
            table = pq.ParquetFile(shard).read()
            start = perf_counter()
            lo, hi = np.searchsorted(self._positions, [first, first + table.num_rows])
            keep = np.ones(table.num_rows, bool)
            keep[self._positions[lo:hi] - first] = False
            for code, count in zip(*np.unique(self._codes[lo:hi], return_counts=True)):
                reason = REASONS[code - 1]
                self.stats.dropped[reason] = self.stats.dropped.get(reason, 0) + int(count)
            kept = table.take(numeric_array(np.flatnonzero(keep)))
            self.stats.input += table.num_rows
            self.stats.kept += kept.num_rows
            self.stats.bytes += text_bytes(kept)
            self.stats.seconds += perf_counter() - start
            first += table.num_rows
            yield kept
