"""Drops documents whose share of words on a bad-words list is above a threshold (C4 drops at any)."""

from __future__ import annotations

import re

from data_prep.config import BadWordsFilterConfig
from data_prep.document import Document
from data_prep.filters.base import BaseFilter
from data_prep.filters.url import read_word_list

_WORD = re.compile(r"\w+")


class BadWordsFilter(BaseFilter):
    """Drops ``bad_words``. Single words are matched as whole words; a listed phrase counts
    each of its words wherever the phrase occurs."""

    name = "badwords"

    def __init__(self, cfg: BadWordsFilterConfig) -> None:
        super().__init__()
        self.max_fraction = cfg.max_fraction
        entries = read_word_list(cfg.path)
        self.words = frozenset(entry for entry in entries if " " not in entry)
        self.phrases = tuple(" ".join(_WORD.findall(entry)) for entry in entries if " " in entry)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        words = _WORD.findall(doc.text.lower())
        if not words:
            return True
        bad = sum(map(self.words.__contains__, words))
        if self.phrases:
            joined = f" {' '.join(words)} "
            bad += sum(joined.count(f" {phrase} ") * (phrase.count(" ") + 1) for phrase in self.phrases)
        if bad / len(words) > self.max_fraction:
            return False, "bad_words"
        return True
