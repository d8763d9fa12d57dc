"""Gopher's repetition filter (Rae et al. 2021, table A1): boilerplate and spam repeat themselves.

Repeated lines and paragraphs catch menus and templated listings; a dominant 2-4-gram
catches keyword stuffing; a large share of text inside repeated 5-10-grams catches
copy-paste loops. Everything is linear in the document: one Counter per n-gram size,
built from C-level ``zip`` tuples, and the coverage pass only runs when an n-gram repeats.
"""

from __future__ import annotations

import re
from collections import Counter
from itertools import compress

from data_prep.config import RepetitionFilterConfig
from data_prep.document import Document
from data_prep.filters.base import BaseFilter

_WORD = re.compile(r"\w+")
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
        paragraphs = [p.strip() for p in _PARAGRAPH_BREAK.split(text) if p.strip()]
        share, char_share = duplicate_shares(paragraphs)
        if share > cfg.max_duplicate_paragraph_fraction:
            return False, "duplicate_paragraphs"
        if char_share > cfg.max_duplicate_paragraph_char_fraction:
            return False, "duplicate_paragraph_chars"
        lines = [line for line in map(str.strip, text.splitlines()) if line]
        share, char_share = duplicate_shares(lines)
        if share > cfg.max_duplicate_line_fraction:
            return False, "duplicate_lines"
        if char_share > cfg.max_duplicate_line_char_fraction:
            return False, "duplicate_line_chars"
        words = _WORD.findall(text.lower())
        lengths = list(map(len, words))
        total = sum(lengths)
        if not total:
            return True
        for n, limit in zip(TOP_NGRAM_SIZES, cfg.top_ngram_fractions):
            if top_ngram_chars(words, n) / total > limit:
                return False, f"top_{n}_gram"
        for n, limit in zip(DUPLICATE_NGRAM_SIZES, cfg.duplicate_ngram_fractions):
            covered = duplicate_ngram_chars(words, lengths, n)
            if covered / total > limit:
                return False, f"duplicate_{n}_grams"
            if not covered:  # no repeated n-gram means no repeated longer one either
                break
        return True


def duplicate_shares(items: list[str]) -> tuple[float, float]:
    """(items that repeat an earlier one, their characters) as fractions of all items and characters."""
    if not items:
        return 0.0, 0.0
    seen: set[str] = set()
    repeats = repeated_chars = total_chars = 0
    for item in items:
        total_chars += len(item)
        if item in seen:
            repeats += 1
            repeated_chars += len(item)
        else:
            seen.add(item)
    return repeats / len(items), repeated_chars / total_chars


def _ngrams(words: list[str], n: int) -> zip:
    return zip(*(words[i:] for i in range(n)))


def top_ngram_chars(words: list[str], n: int) -> int:
    """Characters in all occurrences of the most frequent n-gram, if it occurs more than once."""
    counts = Counter(_ngrams(words, n))
    if not counts:
        return 0
    gram, count = counts.most_common(1)[0]
    return sum(map(len, gram)) * count if count > 1 else 0


def duplicate_ngram_chars(words: list[str], lengths: list[int], n: int) -> int:
    """Characters of the words inside any n-gram that occurs more than once; overlaps count once."""
    grams = list(_ngrams(words, n))
    counts = Counter(grams)
    if len(counts) == len(grams):
        return 0
    covered = bytearray(len(words))
    run = b"\x01" * n
    for start, gram in enumerate(grams):
        if counts[gram] > 1:
            covered[start:start + n] = run
    return sum(compress(lengths, covered))
