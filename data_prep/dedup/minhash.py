"""MinHash-LSH near-deduplication in three stages, each one task of an executor.

1. ``compute_signatures`` (one task per docs shard): normalise each text (lowercase,
   runs of non-letters/digits folded into one space), hash its word 5-gram shingles
   to 32 bits, take ``num_bands * rows_per_band`` MinHashes, and write one 64-bit
   hash per band to ``<dedup_dir>/signatures/<task>.npy`` (shape ``(bands, docs)``).
2. ``cluster`` (one task over all): per band, sort the band hashes of every document
   of every task; equal neighbours are candidate duplicates. Union-find over those
   pairs; every cluster keeps its lowest ``(task, index)`` and the rest go to
   ``<dedup_dir>/remove/<task>.npy`` (sorted indices into that task's documents).
3. ``MinHashDedupFilter`` (one task per docs shard again) streams the same documents
   in the same order and drops the listed ones as ``near_duplicate``.

Everything is vectorised: pyarrow splits and dictionary-encodes words, numpy hashes
the unique words of a batch, combines them into shingles, and applies all hash
functions to all shingles of a batch at once. No hash depends on ``PYTHONHASHSEED``,
the process, or how documents are split into tasks, so the removal set is the same
for one task or many (as long as task names sort in input order).

The hash functions are multiply-add-shift, ``h(x) = ((a*x + b) mod 2**64) >> 32`` on
32-bit shingle hashes with random 64-bit ``a`` (odd) and ``b``: a universal family
(Dietzfelbinger) that numpy computes exactly in uint64, where the usual
``(a*x + b) mod (2**61 - 1)`` would need 128-bit products.

Two documents of Jaccard similarity ``J`` (over shingle sets) share at least one
band with probability ``1 - (1 - J**r)**b``: an S-curve centred near
``(1/b)**(1/r)``. For the default 14 bands x 8 rows: 0.05 at J=0.5, 0.56 at 0.7,
0.92 at 0.8, 0.99 at 0.85 (see ``MinHashConfig.probability``).

Scaling past one machine: ``cluster`` holds per band only that band's column (8 bytes
a document, memory-mapped from each task's file, plus the sort's index) and the
candidate pairs, which are few. Bands are independent, so the collision search splits
into one task per band range (each writes its pairs), leaving only union-find over the
pairs, i.e. over the duplicates, for one machine; at larger scale still, a band's
column can be partitioned by hash range, since equal hashes land in the same range.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from data_prep.document import Document
from data_prep.filters.base import BaseFilter
from pipeline.config import Config, require

BATCH_DOCS = 2_000
"""Documents normalised and shingled together."""
CHUNK_SHINGLES = 1 << 15
"""Shingles hashed at once: a (permutations, chunk) uint64 array, 29 MB for 112 permutations."""
_FOLD = r"[^\p{L}\p{N}\p{M}]+"
_U64 = np.uint64
_WORD_BASE = _U64(0x100000001B3)
_COMBINE = _U64(0x9E3779B97F4A7C15)


@dataclass
class MinHashConfig(Config):
    enabled: bool = True
    ngram: int = 5
    """Words per shingle."""
    num_bands: int = 14
    rows_per_band: int = 8
    """MinHashes per band; ``num_bands * rows_per_band`` hash functions in all (112 by default)."""
    seed: int = 1
    """Seeds the hash functions: signatures from different seeds are not comparable."""

    @property
    def num_perm(self) -> int:
        return self.num_bands * self.rows_per_band

    @property
    def threshold(self) -> float:
        """Jaccard similarity where the S-curve is steepest, ``(1/b)**(1/r)``: 0.72 for 14x8."""
        return (1.0 / self.num_bands) ** (1.0 / self.rows_per_band)

    def probability(self, jaccard: float) -> float:
        """Chance that two documents of this Jaccard similarity become candidates."""
        return 1.0 - (1.0 - jaccard ** self.rows_per_band) ** self.num_bands

    def check(self, prefix: str) -> None:
        require(self.ngram >= 1, f"{prefix}ngram", "must be >= 1")
        require(self.num_bands >= 1, f"{prefix}num_bands", "must be >= 1")
        require(self.rows_per_band >= 1, f"{prefix}rows_per_band", "must be >= 1")
        require(self.seed >= 0, f"{prefix}seed", "must be >= 0")


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit flips about half the output bits."""
    x = x ^ (x >> _U64(30))
    x *= _U64(0xBF58476D1CE4E5B9)
    x ^= x >> _U64(27)
    x *= _U64(0x94D049BB133111EB)
    x ^= x >> _U64(31)
    return x


def _hash_strings(strings: pa.Array) -> np.ndarray:
    """A 64-bit hash of each (non-empty) string: a polynomial over its UTF-8 bytes, then mixed."""
    strings = strings.cast(pa.large_string())
    offsets = np.frombuffer(strings.buffers()[1], np.int64, len(strings) + 1, strings.offset * 8)
    data = np.frombuffer(strings.buffers()[2], np.uint8)[offsets[0]:offsets[-1]]
    starts, lengths = offsets[:-1] - offsets[0], np.diff(offsets)
    powers = np.ones(int(lengths.max()), _U64)
    powers[1:] = np.cumprod(np.full(len(powers) - 1, _WORD_BASE, _U64))  # 1, B, B^2, ... mod 2^64
    from_end = np.repeat(starts + lengths, lengths) - 1 - np.arange(len(data))
    terms = (data.astype(_U64) + _U64(1)) * powers[from_end]
    return _mix64(np.add.reduceat(terms, starts) ^ lengths.astype(_U64))


def _shingle_hashes(texts: pa.Array, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalise and shingle ``texts``; returns (32-bit shingle hashes as uint64, shingles per doc)."""
    folded = pc.utf8_trim_whitespace(pc.replace_substring_regex(pc.utf8_lower(texts), _FOLD, " "))
    # Splitting "" gives [""]: a null instead gives no words.
    word_lists = pc.utf8_split_whitespace(pc.if_else(pc.equal(folded, ""), pa.scalar(None, pa.string()), folded))
    words_per_doc = pc.list_value_length(word_lists).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    words = pc.list_flatten(word_lists)
    shingles_per_doc = np.where(words_per_doc >= ngram, words_per_doc - ngram + 1, np.minimum(words_per_doc, 1))
    if len(words) == 0:
        return np.zeros(0, _U64), shingles_per_doc
    encoded = pc.dictionary_encode(words)
    word_hashes = _hash_strings(encoded.dictionary)[encoded.indices.to_numpy(zero_copy_only=False)]
    # A shingle starts at each word with ngram-1 words after it; shorter docs get one
    # shingle of all their words (the window clipped to the doc's last word).
    doc_word_starts = np.cumsum(words_per_doc) - words_per_doc
    total = int(shingles_per_doc.sum())
    first_shingle = np.cumsum(shingles_per_doc) - shingles_per_doc
    starts = np.repeat(doc_word_starts - first_shingle, shingles_per_doc) + np.arange(total)
    last_word = np.repeat(doc_word_starts + words_per_doc - 1, shingles_per_doc)
    combined = np.zeros(total, _U64)
    for k in range(ngram):
        combined = combined * _COMBINE + word_hashes[np.minimum(starts + k, last_word)]
    return _mix64(combined) >> _U64(32), shingles_per_doc


def _permutations(cfg: MinHashConfig) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.Generator(np.random.PCG64(cfg.seed))
    a = rng.integers(0, 2**64, size=cfg.num_perm, dtype=_U64, endpoint=False) | _U64(1)
    b = rng.integers(0, 2**64, size=cfg.num_perm, dtype=_U64, endpoint=False)
    return a, b


def minhash_signatures(texts: Sequence[str] | pa.Array, cfg: MinHashConfig) -> np.ndarray:
    """``(docs, num_perm)`` uint32 MinHash signatures; a text without words gets all 0xFFFFFFFF."""
    texts = texts if isinstance(texts, pa.Array) else pa.array(texts, pa.string())
    shingles, shingles_per_doc = _shingle_hashes(texts, cfg.ngram)
    a, b = _permutations(cfg)
    # Permutations along rows and shingles along columns: reduceat then scans contiguous memory.
    mins = np.full((cfg.num_perm, len(texts)), np.iinfo(_U64).max, _U64)
    doc_of_shingle = np.repeat(np.arange(len(texts)), shingles_per_doc)
    buffer = np.empty((cfg.num_perm, CHUNK_SHINGLES), _U64)
    for lo in range(0, len(shingles), CHUNK_SHINGLES):
        x, docs = shingles[lo:lo + CHUNK_SHINGLES], doc_of_shingle[lo:lo + CHUNK_SHINGLES]
        hashed = buffer[:, :len(x)]
        np.multiply(a[:, None], x, out=hashed)
        hashed += b[:, None]
        # The shift to the high 32 bits is monotone, so it can wait until after the min.
        segment_starts = np.flatnonzero(np.r_[True, docs[1:] != docs[:-1]])
        segment_docs = docs[segment_starts]  # a doc spanning two chunks gets the min of both
        mins[:, segment_docs] = np.minimum(mins[:, segment_docs], np.minimum.reduceat(hashed, segment_starts, axis=1))
    return (mins.T >> _U64(32)).astype(np.uint32)


def band_hashes(signatures: np.ndarray, cfg: MinHashConfig) -> np.ndarray:
    """``(num_bands, docs)`` uint64: one hash of each band's ``rows_per_band`` MinHashes."""
    rows = signatures.reshape(len(signatures), cfg.num_bands, cfg.rows_per_band).astype(_U64)
    combined = np.zeros((len(signatures), cfg.num_bands), _U64)
    for r in range(cfg.rows_per_band):
        combined = _mix64(combined * _COMBINE + rows[:, :, r])
    return np.ascontiguousarray(combined.T)


def _text_batches(source: Iterable[Document] | Sequence[Path]) -> Iterator[pa.Array]:
    if isinstance(source, Sequence) and all(isinstance(p, (str, Path)) for p in source):
        for path in source:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_DOCS, columns=["text"]):
                yield batch.column(0)
        return
    texts: list[str] = []
    for doc in source:
        texts.append(doc.text)
        if len(texts) == BATCH_DOCS:
            yield pa.array(texts, pa.string())
            texts = []
    if texts:
        yield pa.array(texts, pa.string())


def _save_atomic(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    with open(temp, "wb") as f:
        np.save(f, array)
    os.replace(temp, path)
    return path


def signatures_path(dedup_dir: Path, task: str) -> Path:
    return Path(dedup_dir) / "signatures" / f"{task}.npy"


def removal_path(dedup_dir: Path, task: str) -> Path:
    return Path(dedup_dir) / "remove" / f"{task}.npy"


def compute_signatures(source: Iterable[Document] | Sequence[Path], cfg: MinHashConfig, dedup_dir: Path,
                       task: str) -> Path:
    """Stage 1 for one task: ``source`` is its documents, or its docs/*.parquet files (read in order).

    Writes ``signatures/<task>.npy``, ``(num_bands, docs)`` uint64, atomically. The document
    order is the contract with ``MinHashDedupFilter``: stage 3 must see the same documents.
    """
    bands = [band_hashes(minhash_signatures(texts, cfg), cfg) for texts in _text_batches(source)]
    array = np.concatenate(bands, axis=1) if bands else np.zeros((cfg.num_bands, 0), _U64)
    return _save_atomic(signatures_path(dedup_dir, task), array)


def _min_labels(n: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Connected components of the graph (n nodes, edges u-v): each node's smallest member."""
    labels = np.arange(n)
    while True:
        lu, lv = labels[u], labels[v]
        if np.array_equal(lu, lv):
            return labels
        low = np.minimum(lu, lv)
        np.minimum.at(labels, lu, low)  # hook each root under the smaller root of its edge's other end
        np.minimum.at(labels, lv, low)
        while not np.array_equal(jumped := labels[labels], labels):  # compress paths to their roots
            labels = jumped


def cluster_labels(dedup_dir: Path, cfg: MinHashConfig) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Every task's signatures -> (tasks in name order, docs per task, each doc's cluster keeper).

    Documents are numbered globally in ``(task, index)`` order; ``labels[g]`` is the smallest
    global number in doc ``g``'s cluster, so ``labels[g] == g`` means "keep".
    """
    paths = sorted(Path(dedup_dir, "signatures").glob("*.npy"))
    arrays = [np.load(p, mmap_mode="r") for p in paths]
    for path, array in zip(paths, arrays):
        if array.shape[0] != cfg.num_bands:
            raise ValueError(f"{path}: {array.shape[0]} bands, config says {cfg.num_bands}")
    sizes = np.array([a.shape[1] for a in arrays], np.int64)
    n = int(sizes.sum())
    sources, targets = [], []
    for band in range(cfg.num_bands):
        column = np.concatenate([a[band] for a in arrays]) if arrays else np.zeros(0, _U64)
        order = np.argsort(column, kind="stable")  # equal hashes stay in (task, index) order
        ordered = column[order]
        new_run = np.r_[True, ordered[1:] != ordered[:-1]] if n else np.zeros(0, bool)
        run_first = order[new_run][np.cumsum(new_run) - 1]
        sources.append(run_first[~new_run])
        targets.append(order[~new_run])
    u = np.concatenate(sources) if sources else np.zeros(0, np.int64)
    v = np.concatenate(targets) if targets else np.zeros(0, np.int64)
    return [p.stem for p in paths], sizes, _min_labels(n, u, v)


def cluster(dedup_dir: Path, cfg: MinHashConfig) -> dict[str, int]:
    """Stage 2 over all tasks: writes ``remove/<task>.npy`` (sorted int64 indices, maybe empty)
    for every task that has signatures; returns ``{"docs", "clusters", "removed"}``."""
    tasks, sizes, labels = cluster_labels(dedup_dir, cfg)
    removed = labels != np.arange(len(labels))
    offsets = np.cumsum(sizes) - sizes
    for task, offset, size in zip(tasks, offsets, sizes):
        _save_atomic(removal_path(dedup_dir, task), np.flatnonzero(removed[offset:offset + size]).astype(np.int64))
    in_clusters = np.unique(labels[removed])
    return {"docs": len(labels), "clusters": len(in_clusters), "removed": int(removed.sum())}


class MinHashDedupFilter(BaseFilter):
    """Stage 3: drops ``near_duplicate`` the documents at the given indices of this task's stream.

    It counts the documents it sees, so it must get exactly the sequence that
    ``compute_signatures`` got for the task (same files, same order, same upstream filters).
    """

    name = "minhash"

    def __init__(self, remove: Iterable[int]) -> None:
        super().__init__()
        self._remove = np.unique(np.fromiter(remove, np.int64))
        self._next = 0
        self._index = 0

    @classmethod
    def for_task(cls, dedup_dir: Path, task: str) -> MinHashDedupFilter:
        return cls(np.load(removal_path(dedup_dir, task)))

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        index, self._index = self._index, self._index + 1
        if self._next < len(self._remove) and self._remove[self._next] == index:
            self._next += 1
            return False, "near_duplicate"
        return True
