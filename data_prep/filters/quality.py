"""A Gopher-style quality gate (Rae et al. 2021): cheap statistics over whitespace words and lines.

It catches what extraction leaves behind when a page has no prose: error pages and
stubs (too few words), symbol soup and tables of numbers (few words with a letter),
machine strings such as base64 or hashes (mean word length out of range), hashtag
and teaser spam (``#`` or ``...`` per word), link lists (bullet lines), truncated
previews (lines ending in an ellipsis), and word salad without English function words.
"""

from __future__ import annotations

import re
from itertools import filterfalse
from operator import methodcaller

from data_prep.config import QualityFilterConfig
from data_prep.document import Document
from data_prep.filters.base import BaseFilter

_LETTER = re.compile(r"[^\W\d_]")
"""A letter of any script (a word character that is neither a digit nor ``_``)."""
STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
"""Gopher's English stop words: prose has them, keyword stuffing and tables rarely do."""
BULLETS = ("•", "‣", "●", "○", "◦", "▪", "▫", "■", "□", "–", "-", "*", "·")
ELLIPSES = ("...", "…")
_STARTS_WITH_BULLET = methodcaller("startswith", BULLETS)
_ENDS_WITH_ELLIPSIS = methodcaller("endswith", ELLIPSES)
_PUNCTUATION = "\"'“”‘’.,;:!?()[]"


class QualityFilter(BaseFilter):
    """Drops ``too_few_words``, ``too_many_words``, ``mean_word_length``, ``too_few_alpha_words``,
    ``symbol_word_ratio``, ``bullet_lines``, ``ellipsis_lines`` and ``too_few_stop_words``."""

    name = "quality"

    def __init__(self, cfg: QualityFilterConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        cfg, text = self.cfg, doc.text
        words = text.split()
        if len(words) < cfg.min_words:
            return False, "too_few_words"
        if len(words) > cfg.max_words:
            return False, "too_many_words"
        mean_length = len("".join(words)) / len(words)
        if not cfg.min_mean_word_length <= mean_length <= cfg.max_mean_word_length:
            return False, "mean_word_length"
        if _too_few_with_letter(words, cfg.min_alpha_word_fraction):
            return False, "too_few_alpha_words"
        ellipses = text.count("...") + text.count("…")
        if max(text.count("#"), ellipses) / len(words) > cfg.max_symbol_word_ratio:
            return False, "symbol_word_ratio"
        lines = list(filter(None, map(str.strip, text.splitlines())))
        if sum(map(_STARTS_WITH_BULLET, lines)) / len(lines) > cfg.max_bullet_line_fraction:
            return False, "bullet_lines"
        if sum(map(_ENDS_WITH_ELLIPSIS, lines)) / len(lines) > cfg.max_ellipsis_line_fraction:
            return False, "ellipsis_lines"
        if cfg.min_stop_words and not _has_stop_words(words, cfg.min_stop_words):
            return False, "too_few_stop_words"
        return True


def _too_few_with_letter(words: list[str], min_fraction: float) -> bool:
    """Whether the share of words holding a letter is below ``min_fraction``. The all-letter words
    are counted in C; the rest are only searched when those alone do not reach the share."""
    rest = list(filterfalse(str.isalpha, words))
    all_letters = len(words) - len(rest)
    if all_letters / len(words) >= min_fraction:
        return False
    return (all_letters + sum(map(bool, map(_LETTER.search, rest)))) / len(words) < min_fraction


def _has_stop_words(words: list[str], wanted: int) -> bool:
    """Whether ``wanted`` distinct stop words occur; stops reading at the first ``wanted``."""
    found: set[str] = set()
    for word in words:
        word = word.strip(_PUNCTUATION).lower()
        if word in STOP_WORDS:
            found.add(word)
            if len(found) >= wanted:
                return True
    return False
