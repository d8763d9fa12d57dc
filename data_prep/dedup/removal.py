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
none (the directory is emptied first, so no earlier run's file can stand in). ``RemovalFilter``
then streams the task's filtered documents, in the same order, and drops the listed ones.

Memory: 16 bytes a document for exact keys, 8 for URL keys, and per band 16 (the column and
its sort order); the keys are memory-mapped (files over 1 MiB). ``minhash.py`` says how the
band search splits further when one machine is not enough.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np

from data_prep.config import DedupConfig
from data_prep.dedup.keys import key_height, key_rows, keys_of, keys_path, save_atomic
from data_prep.dedup.minhash import near_duplicate_labels
from data_prep.document import Document
from data_prep.filters.base import BaseFilter

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
    arrays = [_load(keys_path(keys_dir, task)) for task in tasks]
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


class RemovalFilter(BaseFilter):
    """Drops the documents at the listed positions of this task's stream, by their reason.

    It counts the documents it sees, so it must get exactly the sequence the task's keys were
    computed from (its filtered shards, in order)."""

    name = "dedup"

    def __init__(self, removals: np.ndarray) -> None:
        super().__init__()
        removals = np.asarray(removals, np.int64).reshape(-1, 2)
        self._positions = removals[:, 0].tolist()
        self._reasons = [REASONS[code - 1] for code in removals[:, 1].tolist()]
        self._next = 0
        self._index = 0

    @property
    def removes_any(self) -> bool:
        return bool(self._positions)

    @classmethod
    def for_task(cls, dedup_dir: Path, task: str) -> RemovalFilter:
        return cls(task_removals(dedup_dir, task))

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        index, self._index = self._index, self._index + 1
        if self._next < len(self._positions) and self._positions[self._next] == index:
            reason = self._reasons[self._next]
            self._next += 1
            return False, reason
        return True
