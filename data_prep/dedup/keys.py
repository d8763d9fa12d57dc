"""Per-task dedup keys: what the cluster stage needs to know of each filtered document.

For one task's ``filtered/<task>-*.parquet`` (read in order: the row order is the contract
with ``data_prep.dedup.removal``), writes to ``<keys_dir>/``:

- ``<task>.text.npy``  ``(docs, 2)`` uint64: a 128-bit BLAKE2b hash of the folded text
  (``minhash.fold_texts``), so "same words, other case, spacing or punctuation" collide
  and, at 128 bits, nothing else does at any corpus size;
- ``<task>.url.npy``   ``(docs,)`` uint64: a hash of the normalised URL for sources listed
  in ``url_sources``, 0 for other documents (never deduplicated by URL);
- ``<task>.bands.npy`` ``(num_bands, docs)`` uint64: MinHash-LSH band hashes.

Only the enabled kinds are written. Each file is written whole (temp + rename).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from data_prep.arrays import nonempty
from data_prep.config import DedupConfig
from data_prep.dedup.minhash import BATCH_DOCS, band_hashes, fold_texts, minhash_signatures
from pipeline.core.files import atomic_open

KINDS = ("text", "url", "bands")


def keys_path(keys_dir: Path, task: str, kind: str) -> Path:
    return Path(keys_dir) / f"{task}.{kind}.npy"


def enabled_kinds(cfg: DedupConfig) -> list[str]:
    return [kind for kind, on in zip(KINDS, (cfg.exact, cfg.url, cfg.minhash.enabled)) if on]


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


def compute_keys(paths: Sequence[Path], cfg: DedupConfig, keys_dir: Path, task: str) -> int:
    """Keys of every document in ``paths`` (one task's filtered shards, in order); returns the count."""
    kinds = enabled_kinds(cfg)
    url_sources = frozenset(cfg.url_sources)
    parts: dict[str, list[np.ndarray]] = {kind: [] for kind in kinds}
    columns = ["text", "url", "source"] if cfg.url else ["text"]
    for path in paths:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_DOCS, columns=columns):
            folded = fold_texts(batch.column("text")) if cfg.exact or cfg.minhash.enabled else None
            if cfg.exact:  # a text of symbols only folds to "": its own characters are its key
                raw = batch.column("text")
                parts["text"].append(_text_hashes(pc.if_else(nonempty(folded), folded, raw)))
            if cfg.url:
                parts["url"].append(_url_hashes(batch.column("url"), batch.column("source"), url_sources))
            if cfg.minhash.enabled:
                parts["bands"].append(
                    band_hashes(minhash_signatures(folded, cfg.minhash, folded=True), cfg.minhash)
                )
    empty = {
        "text": np.zeros((0, 2), np.uint64),
        "url": np.zeros(0, np.uint64),
        "bands": np.zeros((cfg.minhash.num_bands, 0), np.uint64),
    }
    count = 0
    for kind in kinds:
        axis = 1 if kind == "bands" else 0
        array = np.concatenate(parts[kind], axis=axis) if parts[kind] else empty[kind]
        count = array.shape[axis]
        save_atomic(keys_path(keys_dir, task, kind), array)
    return count


def save_atomic(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as f:
        np.save(f, array)
    return path
