"""HTML -> the page's main text, with resiliparse.

``main_content=True`` drops navigation, headers, footers, sidebars and cookie
banners by resiliparse's element heuristics; it is ~14x faster than trafilatura on
the Common Crawl fixtures (PLATFORM.md, "Extraction speed"), which decides the
throughput of the whole prep path.
"""

from __future__ import annotations

from resiliparse.extract.html2text import extract_plain_text
from resiliparse.parse.html import HTMLParserException

from data_prep.document import Document
from data_prep.filters.base import BaseFilter


def html_to_text(html: str) -> str:
    return extract_plain_text(html, main_content=True).strip()


class HtmlExtractor(BaseFilter):
    """Replaces ``doc.text`` (decoded HTML) with its main text; drops ``empty_text``."""

    name = "extract"
    document_errors = (HTMLParserException,)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        doc.text = html_to_text(doc.text)
        return True if doc.text else (False, "empty_text")
