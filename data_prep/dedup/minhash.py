"""MinHash-LSH near-duplicate detection, vectorised: the algorithm, no files.

``data_prep.dedup.keys`` calls ``band_hashes(minhash_signatures(...))`` on each task's
documents; ``data_prep.dedup.removal`` calls ``near_duplicate_labels`` on every task's
bands at once. The steps:

1. Normalise each text (lowercase, runs of non-letters/digits folded into one space;
   ``data_prep.dedup.fold``), hash its word 5-gram shingles to 32 bits and take
   ``num_bands * rows_per_band`` MinHashes (``minhash_signatures``).
2. Hash each band's ``rows_per_band`` MinHashes into one 64-bit value (``band_hashes``).
3. Per band, sort the band hashes of all documents; equal neighbours are candidate
   duplicates. Connected components over those pairs are the clusters; each keeps the member
   that collides with the others in the most bands (lowest global index on a tie): the
   cluster's centre, which is near every member, where the lowest index may be a document
   chained in at the cluster's edge (``near_duplicate_labels``). A text with no shingles
   (symbols, emoji only) has band hashes 0, which match nothing: it has no signature to compare.

Everything is vectorised: pyarrow splits and dictionary-encodes words, numpy hashes
the unique words of a batch, combines them into shingles, and applies all hash
functions to all shingles of a batch at once. No hash depends on ``PYTHONHASHSEED``,
the process, or how documents are split into tasks, so the clusters are the same
for one task or many.

The hash functions are multiply-add-shift, ``h(x) = ((a*x + b) mod 2**64) >> 32`` on
32-bit shingle hashes with random 64-bit ``a`` (odd) and ``b``: a universal family
(Dietzfelbinger) that numpy computes exactly in uint64, where the usual
``(a*x + b) mod (2**61 - 1)`` would need 128-bit products.

Two documents of Jaccard similarity ``J`` (over shingle sets) share at least one
band with probability ``1 - (1 - J**r)**b``: an S-curve centred near
``(1/b)**(1/r)``. For the default 14 bands x 8 rows: 0.05 at J=0.5, 0.56 at 0.7,
0.92 at 0.8, 0.99 at 0.85 (see ``MinHashConfig.probability``).

Scaling past one machine: clustering holds per band only that band's column (8 bytes
a document, memory-mapped from each task's file, plus the sort's index) and the
candidate pairs, which are few. Bands are independent, so the collision search splits
into one task per band range (each writes its pairs), leaving only union-find over the
pairs, i.e. over the duplicates, for one machine; at larger scale still, a band's
column can be partitioned by hash range, since equal hashes land in the same range.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data_prep.arrays import integers, nonempty
from data_prep.config import MinHashConfig
from data_prep.dedup.fold import fold_texts

BATCH_DOCS = 512
"""Documents normalised and shingled together: a batch of web pages (~1k words each) makes ~0.5M
shingles, i.e. a few 4 MB index arrays; larger batches buy no speed and cost memory."""
CHUNK_SHINGLES = 1 << 13
"""Shingles hashed at once: a (permutations, chunk) uint64 array, 7 MB for 112 permutations. Small
enough to stay in cache between the multiply, the add and the min: 1.5x faster than 1 << 15."""
_U64 = np.uint64
_WORD_BASE = _U64(0x100000001B3)
_COMBINE = _U64(0x9E3779B97F4A7C15)


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
    data = np.frombuffer(strings.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
    starts, lengths = offsets[:-1] - offsets[0], np.diff(offsets)
    powers = np.ones(int(lengths.max()), _U64)
    powers[1:] = np.cumprod(np.full(len(powers) - 1, _WORD_BASE, _U64))  # 1, B, B^2, ... mod 2^64
    from_end = np.repeat(starts + lengths, lengths) - 1 - np.arange(len(data))
    terms = (data.astype(_U64) + _U64(1)) * powers[from_end]
    return _mix64(np.add.reduceat(terms, starts) ^ lengths.astype(_U64))


def _shingle_hashes(folded: pa.Array, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """Shingle folded texts; returns (32-bit shingle hashes as uint64, shingles per doc)."""
    # Splitting "" gives [""]: a null instead gives no words.
    word_lists = pc.utf8_split_whitespace(
        pc.if_else(nonempty(folded), folded, pa.nulls(len(folded), pa.string()))
    )
    words_per_doc = integers(pc.list_value_length(word_lists)).astype(np.int64)
    words = pc.list_flatten(word_lists)
    shingles_per_doc = np.where(
        words_per_doc >= ngram, words_per_doc - ngram + 1, np.minimum(words_per_doc, 1)
    )
    if len(words) == 0:
        return np.zeros(0, _U64), shingles_per_doc
    encoded = pc.dictionary_encode(words)
    word_hashes = _hash_strings(encoded.dictionary)[integers(encoded.indices)]
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


def minhash_signatures(
    texts: Sequence[str] | pa.Array, cfg: MinHashConfig, *, folded: bool = False
) -> np.ndarray:
    """``(docs, num_perm)`` uint32 MinHash signatures; a text without words gets all 0xFFFFFFFF.
    ``folded=True``: ``texts`` already went through ``fold_texts``."""
    texts = texts if folded and isinstance(texts, pa.Array) else fold_texts(texts)
    shingles, shingles_per_doc = _shingle_hashes(texts, cfg.ngram)
    a, b = _permutations(cfg)
    # Permutations along rows and shingles along columns: reduceat then scans contiguous memory.
    mins = np.full((cfg.num_perm, len(texts)), np.iinfo(_U64).max, _U64)
    doc_of_shingle = np.repeat(np.arange(len(texts)), shingles_per_doc)
    buffer = np.empty((cfg.num_perm, min(CHUNK_SHINGLES, len(shingles))), _U64)  # a small file's: small
    for lo in range(0, len(shingles), CHUNK_SHINGLES):
        x, docs = shingles[lo : lo + CHUNK_SHINGLES], doc_of_shingle[lo : lo + CHUNK_SHINGLES]
        hashed = buffer[:, : len(x)]
        np.multiply(a[:, None], x, out=hashed)
        hashed += b[:, None]
        # The shift to the high 32 bits is monotone, so it can wait until after the min.
        segment_starts = np.flatnonzero(np.r_[True, docs[1:] != docs[:-1]])
        segment_docs = docs[segment_starts]  # a doc spanning two chunks gets the min of both
        mins[:, segment_docs] = np.minimum(
            mins[:, segment_docs], np.minimum.reduceat(hashed, segment_starts, axis=1)
        )
    return (mins.T >> _U64(32)).astype(np.uint32)


def band_hashes(signatures: np.ndarray, cfg: MinHashConfig) -> np.ndarray:
    """``(num_bands, docs)`` uint64: one hash of each band's ``rows_per_band`` MinHashes; 0 (never a
    candidate) for a document without shingles, whose signature is all 0xFFFFFFFF."""
    rows = signatures.reshape(len(signatures), cfg.num_bands, cfg.rows_per_band).astype(_U64)
    combined = np.zeros((len(signatures), cfg.num_bands), _U64)
    for r in range(cfg.rows_per_band):
        combined = _mix64(combined * _COMBINE + rows[:, :, r])
    combined[(signatures == np.iinfo(np.uint32).max).all(axis=1)] = 0
    return np.ascontiguousarray(combined.T)


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


def near_duplicate_labels(bands: Sequence[np.ndarray], num_bands: int) -> np.ndarray:
    """``bands``: each task's ``(num_bands, docs)`` band hashes (memory-mapped is fine), in global order.

    Returns ``labels`` over the concatenated documents: ``labels[g]`` is the global index of the
    keeper of doc ``g``'s cluster, so ``labels[g] == g`` means "keep". The keeper collides with
    the other members in the most bands; a tie goes to the lowest index."""
    n = sum(int(array.shape[1]) for array in bands)
    sources, targets = [], []
    collisions = np.zeros(n, np.int64)
    for band in range(num_bands):
        column = np.concatenate([array[band] for array in bands]) if bands else np.zeros(0, _U64)
        order = np.argsort(column, kind="stable")  # equal hashes stay in global order
        ordered = column[order]
        new_run = np.r_[True, ordered[1:] != ordered[:-1]] if n else np.zeros(0, bool)
        new_run |= ordered == 0  # no shingles: each is a run of its own
        run_of = np.cumsum(new_run) - 1
        run_first = order[new_run][run_of]
        collisions[order] += np.bincount(run_of)[run_of] - 1
        sources.append(run_first[~new_run])
        targets.append(order[~new_run])
    u = np.concatenate(sources) if sources else np.zeros(0, np.int64)
    v = np.concatenate(targets) if targets else np.zeros(0, np.int64)
    components = _min_labels(n, u, v)
    ranked = np.lexsort((np.arange(n), -collisions, components))  # by cluster, most collisions first
    first = np.r_[True, components[ranked][1:] != components[ranked][:-1]] if n else np.zeros(0, bool)
    keeper = np.empty(n, np.int64)
    keeper[components[ranked][first]] = ranked[first]
    return keeper[components]
