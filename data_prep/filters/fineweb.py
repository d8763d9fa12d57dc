"""FineWeb's own quality rules (Penedo et al. 2024, section 3.3), run after Gopher and C4.

FineWeb found these on pages that passed Gopher and C4 but still read as junk: lists and
listings (few lines ending in punctuation, mostly short lines, many newlines per word) and
templated pages (many characters in lines that repeat). The thresholds are FineWeb's.
"""

from __future__ import annotations

import re
from operator import methodcaller

from data_prep.config import FineWebQualityFilterConfig
from data_prep.document import Document
from data_prep.filters.base import BaseFilter
from data_prep.filters.repetition import duplicate_shares

TERMINAL_PUNCTUATION = (
    ".",
    "!",
    "?",
    "‼",
    "⁇",
    "⁈",
    "⁉",
    "。",
    "！",
    "？",
    "．",
    "؟",
    "۔",
    "।",
    "॥",
    "։",
    "።",
    "။",
)
"""Sentence terminals (Unicode's Sentence_Terminal, the common scripts): Latin, CJK, Arabic, Devanagari,
Armenian, Ethiopic, Myanmar. Not a closing bracket: list lines such as "Ann Lee (Team Lead)" end in one."""
_ENDS_WITH_PUNCTUATION = methodcaller("endswith", TERMINAL_PUNCTUATION)
_TOKEN = re.compile(r"\w+|[^\w\s]")
"""A word or one punctuation mark: FineWeb divides newlines by its tokenizer's tokens, marks included."""


class FineWebQualityFilter(BaseFilter):
    """Drops ``empty``, ``line_punct_ratio``, ``short_line_ratio``, ``char_dup_ratio`` and ``list_ratio``."""

    name = "fineweb"

    def __init__(self, cfg: FineWebQualityFilterConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        cfg, text = self.cfg, doc.text
        lines = [line for line in text.split("\n") if line.strip()]
        if not lines:
            return False, "empty"
        if sum(map(_ENDS_WITH_PUNCTUATION, lines)) / len(lines) < cfg.min_line_punctuation_fraction:
            return False, "line_punct_ratio"
        short = sum(len(line) <= cfg.short_line_length for line in lines)
        if short / len(lines) > cfg.max_short_line_fraction:
            return False, "short_line_ratio"
        flat = len(text) - text.count("\n")
        if duplicate_shares(lines, flat)[1] > cfg.max_duplicate_line_char_fraction:
            return False, "char_dup_ratio"
        tokens = len(_TOKEN.findall(text))
        if not tokens or text.count("\n") / tokens > cfg.max_newline_fraction:
            return False, "list_ratio"
        return True
