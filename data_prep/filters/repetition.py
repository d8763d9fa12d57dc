"""Gopher's repetition filter (Rae et al. 2021, table A1): boilerplate and spam repeat themselves.

Repeated lines and paragraphs catch menus and templated listings; a dominant 2-4-gram
catches keyword stuffing; a large share of text inside repeated 5-10-grams catches
copy-paste loops. Everything is linear in the document, and only the 2-grams are counted
everywhere: an n-gram can only repeat where the (n-1)-gram it starts with repeats, so each
larger size counts just the starts where the smaller one repeated (usually a small share),
and the sizes stop as soon as nothing repeats.

Every fraction of characters is over the whole document's characters (``len(text)``), as in
Gopher ("fraction of characters"): dividing by the word characters alone inflated them by
1.25-1.35x. Words are whitespace tokens with their surrounding punctuation stripped, so
``state-of-the-art`` and ``v1.2.3`` stay one word each. A top n-gram counts only if it occurs
more than once: a short page's only 3-gram is not repetition (datatrove counts it).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections import Counter
from itertools import compress, repeat
from operator import add, gt, methodcaller

from data_prep.config import RepetitionFilterConfig
from data_prep.document import Document
from data_prep.filters.base import BaseFilter

_EDGE_PUNCTUATION = "\"'“”‘’.,;:!?()[]{}<>«»*_`"
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
TOP_NGRAM_SIZES = (2, 3, 4)
DUPLICATE_NGRAM_SIZES = (5, 6, 7, 8, 9, 10)


class RepetitionFilter(BaseFilter):
    """Drops ``duplicate_lines``, ``duplicate_line_chars``, ``duplicate_paragraphs``,
    ``duplicate_paragraph_chars``, ``top_<n>_gram`` and ``duplicate_<n>_grams``."""

    name = "repetition"

    def __init__(self, cfg: RepetitionFilterConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        cfg, text = self.cfg, doc.text
        size = len(text)
        if not size:
            return True
        paragraphs = list(filter(None, map(str.strip, _PARAGRAPH_BREAK.split(text))))
        share, char_share = duplicate_shares(paragraphs, size)
        if share > cfg.max_duplicate_paragraph_fraction:
            return False, "duplicate_paragraphs"
        if char_share > cfg.max_duplicate_paragraph_char_fraction:
            return False, "duplicate_paragraph_chars"
        lines = list(filter(None, map(str.strip, text.splitlines())))
        share, char_share = duplicate_shares(lines, size)
        if share > cfg.max_duplicate_line_fraction:
            return False, "duplicate_lines"
        if char_share > cfg.max_duplicate_line_char_fraction:
            return False, "duplicate_line_chars"
        words = split_words(text)
        lengths = list(map(len, words))
        total = size
        starts = None  # the smallest size is counted everywhere
        for n, limit in zip(TOP_NGRAM_SIZES, cfg.top_ngram_fractions):
            counts, starts = repeated_ngrams(words, n, starts)
            if most_common_chars(counts) / total > limit:
                return False, f"top_{n}_gram"
        for n, limit in zip(DUPLICATE_NGRAM_SIZES, cfg.duplicate_ngram_fractions):
            _, starts = repeated_ngrams(words, n, starts)
            covered = covered_chars(lengths, starts, n)
            if covered / total > limit:
                return False, f"duplicate_{n}_grams"
            if not covered:  # no repeated n-gram means no repeated longer one either
                break
        return True


def split_words(text: str) -> list[str]:
    """Whitespace tokens without their leading and trailing punctuation; tokens of punctuation only go."""
    return list(filter(None, map(methodcaller("strip", _EDGE_PUNCTUATION), text.split())))


def duplicate_shares(items: list[str], size: int) -> tuple[float, float]:
    """(items that repeat an earlier one, their characters) as fractions of all items and of ``size``,
    the document's characters."""
    if not items:
        return 0.0, 0.0
    seen: set[str] = set()
    repeats = repeated_chars = 0
    for item in items:
        if item in seen:
            repeats += 1
            repeated_chars += len(item)
        else:
            seen.add(item)
    return repeats / len(items), repeated_chars / size


def repeated_ngrams(
    words: list[str], n: int, candidates: list[int] | None = None
) -> tuple[Counter, list[int]]:
    """Counts of the n-grams starting at ``candidates`` (None: everywhere), and the starts of those
    that occur more than once.

    ``candidates`` (ascending) must hold every start of a repeated n-gram, e.g. the starts of a
    shorter size's repeated n-grams, as every repeat of an n-gram repeats its prefix. The counts
    of the n-grams found there are then exact, and their insertion order is their order of
    first occurrence in the document."""
    if candidates is None:
        starts: range | list[int] = range(max(len(words) - n + 1, 0))
        grams = list(zip(*(words[k:] for k in range(n))))
    else:
        starts = candidates[: bisect_right(candidates, len(words) - n)]
        grams = list(zip(*[map(words.__getitem__, map(add, starts, repeat(k))) for k in range(n)]))
    counts = Counter(grams)
    if len(counts) == len(grams):
        return counts, []
    return counts, list(compress(starts, map(gt, map(counts.__getitem__, grams), repeat(1))))


def top_ngram_chars(words: list[str], n: int) -> int:
    """Characters in all occurrences of the most frequent n-gram, if it occurs more than once."""
    return most_common_chars(repeated_ngrams(words, n)[0])


def duplicate_ngram_chars(words: list[str], lengths: list[int], n: int) -> int:
    """Characters of the words inside any n-gram that occurs more than once; overlaps count once."""
    return covered_chars(lengths, repeated_ngrams(words, n)[1], n)


def most_common_chars(counts: Counter) -> int:
    """Characters in all occurrences of the most frequent (first seen on a tie) counted n-gram, if it
    occurs more than once."""
    if not counts:
        return 0
    gram, count = counts.most_common(1)[0]
    return sum(map(len, gram)) * count if count > 1 else 0


def covered_chars(lengths: list[int], starts: list[int], n: int) -> int:
    """Characters of the words inside the n-grams at ``starts``; overlaps count once."""
    if not starts:
        return 0
    covered = bytearray(len(lengths))
    run = b"\x01" * n
    for start in starts:
        covered[start : start + n] = run
    return sum(compress(lengths, covered))
