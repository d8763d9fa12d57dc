"""C4's clean-up of web text (Raffel et al. 2020, section 2.2): keep the lines that read as sentences.

A transform and a filter at once: lines that are menus, buttons, cookie notices or
"enable JavaScript" warnings are removed from ``doc.text``; a page with placeholder
text or code (a curly bracket), or with too few sentences left, is dropped. Removed
lines are counted in the stage's ``counts`` as ``lines_removed/<why>``.
"""

from __future__ import annotations

import re

from data_prep.config import C4FilterConfig
from data_prep.document import Document
from data_prep.filters.base import BaseFilter

END_MARKS = (".", "?", "!", '"')
ELLIPSIS = "..."
POLICY_PHRASES = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*(?=\s|$)")


class C4Filter(BaseFilter):
    """Removes lines; drops ``lorem_ipsum``, ``curly_bracket`` and ``too_few_sentences``."""

    name = "c4"

    def __init__(self, cfg: C4FilterConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.sources = frozenset(cfg.sources)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if doc.source not in self.sources:
            return True
        cfg = self.cfg
        lowered = doc.text.lower()
        if cfg.drop_lorem_ipsum and "lorem ipsum" in lowered:
            return False, "lorem_ipsum"
        if cfg.drop_curly_bracket and "{" in doc.text:
            return False, "curly_bracket"
        kept = []
        for line in doc.text.splitlines():
            line = line.strip()
            if not line:
                continue
            why = self._line_fault(line)
            if why:
                self.stats.count(f"lines_removed/{why}")
            else:
                kept.append(line)
        doc.text = "\n".join(kept)
        if len(_SENTENCE_END.findall(doc.text)) < cfg.min_sentences:
            return False, "too_few_sentences"
        return True

    def _line_fault(self, line: str) -> str:
        """Why C4 removes this line, or "" to keep it."""
        cfg = self.cfg
        if not line.endswith(END_MARKS) or line.endswith(ELLIPSIS):
            return "no_terminal_punctuation"
        words = line.split()
        if len(words) < cfg.min_words_per_line:
            return "too_few_words"
        if max(map(len, words)) > cfg.max_word_length:
            return "long_word"
        lowered = line.lower()
        if cfg.remove_javascript_lines and "javascript" in lowered:
            return "javascript"
        if cfg.remove_policy_lines and any(phrase in lowered for phrase in POLICY_PHRASES):
            return "policy"
        return ""
