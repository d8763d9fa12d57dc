"""Gopher's repetition filter (Rae et al. 2021, table A1): boilerplate and spam repeat themselves.

Repeated lines and paragraphs catch menus and templated listings; a dominant 2-4-gram
catches keyword stuffing; a large share of text inside repeated 5-10-grams catches
copy-paste loops. Lines and paragraphs are checked per document (a set of the ones seen);
the word n-grams of a whole batch are counted at once in numpy (``data_prep.filters.ngrams``),
only for the documents whose lines and paragraphs passed.

Every fraction of characters is over the whole document's characters (``len(text)``), as in
Gopher ("fraction of characters"): dividing by the word characters alone inflated them by
1.25-1.35x. Words are whitespace tokens with their surrounding punctuation stripped, so
``state-of-the-art`` and ``v1.2.3`` stay one word each. A top n-gram counts only if it occurs
more than once: a short page's only 3-gram is not repetition (datatrove counts it).
"""

from __future__ import annotations

import re

from data_prep.config import RepetitionFilterConfig
from data_prep.document import Document
from data_prep.filters.base import BatchFilter, Verdict
from data_prep.filters.ngrams import DUPLICATE_NGRAM_SIZES, TOP_NGRAM_SIZES, ngram_chars

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


class RepetitionFilter(BatchFilter):
    """Drops ``duplicate_lines``, ``duplicate_line_chars``, ``duplicate_paragraphs``,
    ``duplicate_paragraph_chars``, ``top_<n>_gram`` and ``duplicate_<n>_grams``."""

    name = "repetition"

    def __init__(self, cfg: RepetitionFilterConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def filter_batch(self, docs: list[Document]) -> list[Verdict]:
        verdicts: list[Verdict | None] = [self._line_verdict(doc.text) for doc in docs]
        pending = [i for i, verdict in enumerate(verdicts) if verdict is None]
        chars = ngram_chars([docs[i].text for i in pending])
        for i, top, duplicate in zip(pending, chars.top.tolist(), chars.duplicate.tolist()):
            verdicts[i] = self._ngram_verdict(len(docs[i].text), top, duplicate)
        return [True if verdict is None else verdict for verdict in verdicts]  # None left: none pending

    def _line_verdict(self, text: str) -> Verdict | None:
        """The paragraph and line rules' drop, True for an empty text, None to go on to the n-grams."""
        cfg, size = self.cfg, len(text)
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
        return None

    def _ngram_verdict(self, size: int, top: list[int], duplicate: list[int]) -> Verdict:
        """The n-gram rules, in order of size, on one document's counted characters."""
        for n, limit, chars in zip(TOP_NGRAM_SIZES, self.cfg.top_ngram_fractions, top):
            if chars / size > limit:
                return False, f"top_{n}_gram"
        for n, limit, chars in zip(DUPLICATE_NGRAM_SIZES, self.cfg.duplicate_ngram_fractions, duplicate):
            if chars / size > limit:
                return False, f"duplicate_{n}_grams"
        return True


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
