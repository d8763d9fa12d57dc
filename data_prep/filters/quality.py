"""A Gopher-style quality gate (Rae et al. 2021): cheap statistics over whitespace words.

It catches what extraction leaves behind when a page has no prose: error pages and
stubs (too few words), symbol soup and tables of numbers (few words with a letter),
and machine strings such as base64 or hashes (mean word length out of range).
"""

from __future__ import annotations

import re

from data_prep.config import QualityFilterConfig
from data_prep.document import Document
from data_prep.filters.base import BaseFilter

_WORD_WITH_LETTER = re.compile(r"\S*[^\W\d_]\S*")
"""A whitespace-separated word that holds at least one letter of any script."""


class QualityFilter(BaseFilter):
    """Drops ``too_few_words``, ``too_many_words``, ``mean_word_length`` and ``too_few_alpha_words``."""

    name = "quality"

    def __init__(self, cfg: QualityFilterConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        cfg = self.cfg
        words = doc.text.split()
        if len(words) < cfg.min_words:
            return False, "too_few_words"
        if len(words) > cfg.max_words:
            return False, "too_many_words"
        mean_length = sum(map(len, words)) / len(words)
        if not cfg.min_mean_word_length <= mean_length <= cfg.max_mean_word_length:
            return False, "mean_word_length"
        if len(_WORD_WITH_LETTER.findall(doc.text)) / len(words) < cfg.min_alpha_word_fraction:
            return False, "too_few_alpha_words"
        return True
