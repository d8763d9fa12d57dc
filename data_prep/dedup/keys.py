"""Per-task dedup keys: what the cluster stage needs to know of each filtered document.

For one task's ``filtered/<task>-*.parquet`` (their rows in order, taken as the writer writes them:
the row order is the contract with ``data_prep.dedup.removal``), writes ``<keys_dir>/<task>.npy``:
one ``(rows, docs)`` uint64 array whose rows are, for the enabled kinds in this order (``key_rows``):

- ``text``, 2 rows: a 128-bit BLAKE2b hash of the folded text (``data_prep.dedup.fold``), so
  "same words, other case, spacing or punctuation" collide and, at 128 bits, nothing else
  does at any corpus size;
- ``url``, 1 row: a hash of the normalised URL for sources listed in ``url_sources``, 0 for
  other documents (never deduplicated by URL);
- ``bands``, ``num_bands`` rows: MinHash-LSH band hashes.

One file a task, written whole (temp + rename): creating a file costs more than hashing a small
input's documents (~1.3 ms on the ext4 disks here, more on a network file system), and a file
per kind made it three. Each row is contiguous, so the cluster stage reads one band of every
task's memory-mapped file at a time.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from time import perf_counter
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data_prep.arrays import nonempty
from data_prep.config import DedupConfig
from data_prep.dedup.fold import fold_texts
from data_prep.dedup.minhash import BATCH_DOCS, band_hashes, minhash_signatures
from pipeline.core.files import atomic_open

KINDS = ("text", "url", "bands")


def keys_path(keys_dir: Path, task: str) -> Path:
    return Path(keys_dir) / f"{task}.npy"


def enabled_kinds(cfg: DedupConfig) -> list[str]:
    return [kind for kind, on in zip(KINDS, (cfg.exact, cfg.url, cfg.minhash.enabled)) if on]


def key_rows(cfg: DedupConfig) -> dict[str, slice]:
    """Where each enabled kind's rows are in a task's keys array."""
    sizes = {"text": 2, "url": 1, "bands": cfg.minhash.num_bands}
    rows, start = {}, 0
    for kind in enabled_kinds(cfg):
        rows[kind] = slice(start, start + sizes[kind])
        start += sizes[kind]
    return rows


def key_height(cfg: DedupConfig) -> int:
    """Rows of a task's keys array."""
    return max((rows.stop for rows in key_rows(cfg).values()), default=0)


def keys_of(array: np.ndarray, rows: slice, kind: str) -> np.ndarray:
    """One kind's keys from a task's array: ``text`` (docs, 2), ``url`` (docs,), ``bands``
    (num_bands, docs)."""
    if kind == "text":
        return array[rows].T
    return array[rows.start] if kind == "url" else array[rows]


def normalize_url(url: str) -> str:
    """Scheme and host lower-cased, default port and fragment dropped; path and query kept as they are."""
    try:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").rstrip(".")
        port = parts.port
    except ValueError:  # a malformed port or bracket: compare the raw string
        return url.strip()
    scheme = parts.scheme.lower()
    if port is not None and (scheme, port) not in (("http", 80), ("https", 443)):
        host = f"{host}:{port}"
    return f"{scheme}://{host}{parts.path or '/'}{'?' + parts.query if parts.query else ''}"


def url_hash(url: str) -> int:
    """64-bit hash of the normalised URL; never 0 (0 means "no URL key")."""
    value = int.from_bytes(hashlib.blake2b(normalize_url(url).encode(), digest_size=8).digest(), "little")
    return value or 1


def _text_hashes(folded: pa.Array) -> np.ndarray:
    """BLAKE2b-128 of each folded text's UTF-8 bytes, sliced straight from the Arrow buffer."""
    folded = folded.cast(pa.large_string())
    offsets = np.frombuffer(folded.buffers()[1], np.int64, len(folded) + 1, folded.offset * 8)
    data = memoryview(folded.buffers()[2]) if folded.buffers()[2] is not None else memoryview(b"")
    digests = b"".join(
        hashlib.blake2b(data[lo:hi], digest_size=16).digest()
        for lo, hi in zip(offsets[:-1].tolist(), offsets[1:].tolist())
    )
    return np.frombuffer(digests, np.uint64).reshape(len(folded), 2)


def _url_hashes(urls: pa.Array, sources: pa.Array, url_sources: frozenset[str]) -> np.ndarray:
    return np.array(
        [
            url_hash(url) if url and source in url_sources else 0
            for url, source in zip(urls.to_pylist(), sources.to_pylist())
        ],
        np.uint64,
    ).reshape(-1)


class TaskKeys:
    """The keys of one task's documents, gathered table by table as its filtered shards are written
    (reading the shards back cost a file open and a decompression per task), then saved at once."""

    def __init__(self, cfg: DedupConfig) -> None:
        self.cfg = cfg
        self.rows, self.height = key_rows(cfg), key_height(cfg)
        self.url_sources = frozenset(cfg.url_sources)
        self.parts = [np.zeros((self.height, 0), np.uint64)]
        self.seconds = 0.0

    def add(self, table: pa.Table) -> None:
        """Keys of the next rows of the task (a table with ``text``, ``url`` and ``source``)."""
        start = perf_counter()
        for batch in table.to_batches(max_chunksize=BATCH_DOCS):
            self.parts.append(self._keys(batch))
        self.seconds += perf_counter() - start

    def save(self, keys_dir: Path, task: str) -> int:
        """Writes ``<keys_dir>/<task>.npy``; returns the documents it holds. A task that kept no document
        writes none (``plan_removals`` knows its size is 0): creating a file costs more than a small task's
        keys, and in a crawl many inputs lose every page to the filters."""
        start = perf_counter()
        array = np.concatenate(self.parts, axis=1)
        if array.shape[1]:
            save_atomic(keys_path(keys_dir, task), array)
        else:
            keys_path(keys_dir, task).unlink(missing_ok=True)
        self.seconds += perf_counter() - start
        return array.shape[1]

    def _keys(self, batch: pa.RecordBatch) -> np.ndarray:
        cfg, rows = self.cfg, self.rows
        folded = fold_texts(batch.column("text")) if cfg.exact or cfg.minhash.enabled else None
        keys = np.empty((self.height, batch.num_rows), np.uint64)
        if cfg.exact:  # a text of symbols only folds to "": its own characters are its key
            raw = batch.column("text")
            keys[rows["text"]] = _text_hashes(pc.if_else(nonempty(folded), folded, raw)).T
        if cfg.url:
            keys[rows["url"]] = _url_hashes(batch.column("url"), batch.column("source"), self.url_sources)
        if cfg.minhash.enabled:
            signatures = minhash_signatures(folded, cfg.minhash, folded=True)
            keys[rows["bands"]] = band_hashes(signatures, cfg.minhash)
        return keys


def save_atomic(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as f:
        np.save(f, array)
    return path
