"""Gopher's word n-gram repetition statistics for many documents at once, in Arrow and numpy.

Counting n-grams one document at a time in Python cost about a millisecond per web page, the
largest share of prep after extraction. Here a batch of documents is split into words by Arrow
(the same whitespace as ``str.split``, the same edge-punctuation strip as ``str.strip``), the
words get integer ids, and each n-gram size is one ``np.unique`` over packed integer keys for
the whole batch. A key holds the document, so n-grams of different documents never meet, and
no window crosses a document's end.

Only the 2-grams are counted everywhere. An n-gram can only repeat where the (n-1)-gram it
starts with repeats, so each larger size is counted at those starts alone, keyed by the rank
of that (n-1)-gram plus its next word: exact counts for every repeated n-gram, at a small
share of the positions. Results equal the per-document definition exactly (the tests compare
them on crafted and random texts):

- top n-gram (n = 2, 3, 4): characters in all occurrences of the most frequent n-gram, if it
  occurs more than once; on a tie, the one seen first;
- duplicate n-grams (n = 5..10): characters of the words inside any n-gram that occurs more
  than once, each word counted once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc

from data_prep.arrays import integers, nonempty, string_array

EDGE_PUNCTUATION = "\"'“”‘’.,;:!?()[]{}<>«»*_`"
"""Stripped from both ends of every whitespace token: ``state-of-the-art`` and ``v1.2.3`` stay one word."""
TOP_NGRAM_SIZES = (2, 3, 4)
DUPLICATE_NGRAM_SIZES = (5, 6, 7, 8, 9, 10)
_INT64_LIMIT = 2**62


@dataclass
class Words:
    """The words of a batch of documents, concatenated in document order."""

    ids: np.ndarray
    """int64: equal words, equal ids (within this batch)."""
    doc: np.ndarray
    """int64, ascending: the document each word belongs to."""
    chars_before: np.ndarray
    """int64, one longer than ``ids``: characters of all earlier words (a prefix sum of lengths)."""
    vocab: int
    docs: int


@dataclass
class NgramChars:
    """Per document: ``top[:, k]`` for ``TOP_NGRAM_SIZES[k]``, ``duplicate[:, k]`` for
    ``DUPLICATE_NGRAM_SIZES[k]``; characters of words, as int64."""

    top: np.ndarray
    duplicate: np.ndarray


def split_words(texts: Sequence[str]) -> Words:
    """Whitespace tokens without their leading and trailing punctuation; tokens of punctuation only go."""
    lists = pc.utf8_split_whitespace(string_array(texts))
    tokens = pc.utf8_trim(pc.list_flatten(lists), EDGE_PUNCTUATION)
    kept = nonempty(tokens)
    words = pc.filter(tokens, kept)
    encoded = pc.dictionary_encode(words)
    lengths = integers(pc.utf8_length(words)).astype(np.int64)
    chars_before = np.zeros(len(words) + 1, np.int64)
    np.cumsum(lengths, out=chars_before[1:])
    return Words(
        ids=integers(encoded.indices).astype(np.int64),
        doc=integers(pc.filter(pc.list_parent_indices(lists), kept)).astype(np.int64),
        chars_before=chars_before,
        vocab=max(len(encoded.dictionary), 1),
        docs=len(texts),
    )


def ngram_chars(texts: Sequence[str]) -> NgramChars:
    """The repetition statistics of every text (see the module docstring)."""
    words = split_words(texts)
    top = np.zeros((len(texts), len(TOP_NGRAM_SIZES)), np.int64)
    duplicate = np.zeros((len(texts), len(DUPLICATE_NGRAM_SIZES)), np.int64)
    starts = np.arange(len(words.ids), dtype=np.int64)
    prefix = _word_keys(words)
    for n in range(2, max(DUPLICATE_NGRAM_SIZES) + 1):
        starts, prefix, counts, first = _count(words, starts, prefix, n)
        if n in TOP_NGRAM_SIZES:
            top[:, TOP_NGRAM_SIZES.index(n)] = _top_chars(words, counts, first, n)
        repeated = counts[prefix] > 1
        starts, prefix = starts[repeated], prefix[repeated]
        if n in DUPLICATE_NGRAM_SIZES:
            duplicate[:, DUPLICATE_NGRAM_SIZES.index(n)] = _covered_chars(words, starts, n)
        if not len(starts):  # nothing repeats at this size: nothing longer can
            break
    return NgramChars(top=top, duplicate=duplicate)


def _word_keys(words: Words) -> np.ndarray:
    """A key per word that differs between documents: ``doc * vocab + id``, ranked down if a 2-gram
    key built on it could overflow int64."""
    keys = words.doc * words.vocab + words.ids
    if words.docs * words.vocab * words.vocab >= _INT64_LIMIT:
        keys = _group(keys)[0]
    return keys


def _count(
    words: Words, starts: np.ndarray, prefix: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The n-grams at ``starts`` (ascending) whose (n-1)-gram keys are ``prefix``.

    Returns (the starts whose n-gram fits in its document, each one's n-gram rank, the count of each
    rank, the first start of each rank)."""
    last = starts + (n - 1)
    fits = last < len(words.ids)
    fits[fits] = words.doc[last[fits]] == words.doc[starts[fits]]
    starts, last = starts[fits], last[fits]
    ranks, counts, first = _group(prefix[fits] * words.vocab + words.ids[last])
    return starts, ranks, counts, starts[first]


def _group(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.unique(keys, return_inverse, return_counts, return_index)`` minus the unique values, at half
    its cost: one unstable argsort (numpy's fastest), the first index of a group by a min over it.
    Returns (each key's group, each group's size, each group's first index)."""
    if not len(keys):
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = np.argsort(keys)
    ordered = keys[order]
    new = np.empty(len(keys), bool)
    new[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    group_starts = np.flatnonzero(new)
    ranks = np.empty(len(keys), np.int64)
    ranks[order] = np.cumsum(new) - 1
    counts = np.diff(np.append(group_starts, len(keys)))
    return ranks, counts, np.minimum.reduceat(order, group_starts)


def _top_chars(words: Words, counts: np.ndarray, first: np.ndarray, n: int) -> np.ndarray:
    """Per document: characters in all occurrences of its most frequent repeated n-gram (the first
    seen on a tie), 0 if none repeats."""
    out = np.zeros(words.docs, np.int64)
    repeated = counts > 1
    counts, first = counts[repeated], first[repeated]
    if not len(counts):
        return out
    doc = words.doc[first]
    order = np.lexsort((first, -counts, doc))
    best = order[np.r_[True, doc[order][1:] != doc[order][:-1]]]
    chars = words.chars_before[first[best] + n] - words.chars_before[first[best]]
    out[doc[best]] = chars * counts[best]
    return out


def _covered_chars(words: Words, starts: np.ndarray, n: int) -> np.ndarray:
    """Per document: characters of the words inside the n-grams at ``starts`` (ascending); overlaps count
    once. Each n-gram adds its words up to where the next one starts: work in the starts, not the words
    (an n-gram never crosses its document's end, so neither does that stretch)."""
    if not len(starts):
        return np.zeros(words.docs, np.int64)
    ends = np.minimum(starts + n, np.append(starts[1:], len(words.ids)))
    chars = words.chars_before[ends] - words.chars_before[starts]
    return np.bincount(words.doc[starts], weights=chars, minlength=words.docs).astype(np.int64)
