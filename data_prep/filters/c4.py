"""C4's clean-up of web text (Raffel et al. 2020, section 2.2): keep the lines that read as sentences.

A transform and a filter at once: lines that are menus, buttons, cookie notices or
"enable JavaScript" warnings are removed from ``doc.text`` (after citation markers such as
``[1]`` are cut out); a page with placeholder text or code (a curly bracket) in a line that
stays, or with too few sentences left, is dropped. Removed lines are counted in the stage's
``counts`` as ``lines_removed/<why>``.
"""

from __future__ import annotations

import re
from itertools import compress, filterfalse, islice
from operator import methodcaller

from data_prep.config import C4FilterConfig
from data_prep.document import Document
from data_prep.filters.base import BaseFilter

END_MARKS = (".", "?", "!", '"')
ELLIPSIS = "..."
POLICY_PHRASES = (
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
)
_ENDS_WITH_MARK = methodcaller("endswith", END_MARKS)
_ENDS_WITH_ELLIPSIS = methodcaller("endswith", ELLIPSIS)
_CITATION = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]", re.IGNORECASE)
"""Wikipedia-style markers C4 removes from a line before judging it: ``[1]``, ``[edit]``."""
_SENTENCE_END = re.compile(
    r"[.!?](?<!\b[A-Z].)(?<!\b(?:Mr|Ms|Dr|St|Jr|Sr|vs|Co|No).)(?<!\b(?:Mrs|etc|Inc|Ltd|e\.g|i\.e).)"
    r"[.!?]*[\"')\]]*(?=\s|$)"
)
"""A sentence end: end marks then closing quotes or brackets, before a space or the end. A period
after an initial ("G. Allen") or a common abbreviation ("Dr.", "e.g.") ends no sentence, as in
the punkt tokenizer C4 counts sentences with. The look-behinds come after the first end mark, so
they run only where there is one (before it, they ran at every character: a third of the stage)."""


class C4Filter(BaseFilter):
    """Removes lines; drops ``lorem_ipsum``, ``curly_bracket`` and ``too_few_sentences``.

    As the reference (``c4_utils.clean_page``, datatrove's ``C4QualityFilter``), the page-level
    rules look only at lines that survive the line rules: a ``{`` or "lorem ipsum" in a menu line
    that is removed anyway does not drop the page."""

    name = "c4"

    def __init__(self, cfg: C4FilterConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.sources = frozenset(cfg.sources)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if doc.source not in self.sources:
            return True
        cfg = self.cfg
        lines = list(filter(None, map(str.strip, doc.text.splitlines())))
        if cfg.remove_citations:
            lines = [_CITATION.sub("", line) if "[" in line else line for line in lines]
        # Most lines (menus, labels) lack an end mark: set them aside in C before the per-line checks.
        ended = lines
        if cfg.remove_unterminated_lines:
            ended = list(filterfalse(_ENDS_WITH_ELLIPSIS, compress(lines, map(_ENDS_WITH_MARK, lines))))
        if len(ended) < len(lines):
            self.stats.count("lines_removed/no_terminal_punctuation", len(lines) - len(ended))
        kept = []
        for line in ended:
            why = self._line_fault(line)
            if why in ("lorem_ipsum", "curly_bracket"):
                return False, why
            if why:
                self.stats.count(f"lines_removed/{why}")
            else:
                kept.append(line)
        doc.text = "\n".join(kept)
        if not _has_sentences(doc.text, cfg.min_sentences):
            return False, "too_few_sentences"
        return True

    def _line_fault(self, line: str) -> str:
        """Why C4 removes this line that ends a sentence, or "" to keep it; ``lorem_ipsum`` and
        ``curly_bracket`` drop the whole page."""
        cfg = self.cfg
        # Splitting only as far as the minimum says whether it is reached; the full split is only
        # needed for a line long enough to hold a too-long word.
        if len(line.split(maxsplit=cfg.min_words_per_line - 1)) < cfg.min_words_per_line:
            return "too_few_words"
        if len(line) > cfg.max_word_length and max(map(len, line.split())) > cfg.max_word_length:
            return "long_word"
        lowered = line.lower()
        if cfg.drop_lorem_ipsum and "lorem ipsum" in lowered:
            return "lorem_ipsum"
        if cfg.remove_javascript_lines and "javascript" in lowered:
            return "javascript"
        if cfg.drop_curly_bracket and "{" in line:
            return "curly_bracket"
        if cfg.remove_policy_lines and any(map(lowered.__contains__, POLICY_PHRASES)):
            return "policy"
        return ""


def _has_sentences(text: str, wanted: int) -> bool:
    """Whether ``text`` has at least ``wanted`` sentence ends; stops reading at the ``wanted``-th."""
    return wanted <= 0 or next(islice(_SENTENCE_END.finditer(text), wanted - 1, None), None) is not None
