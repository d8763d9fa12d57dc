"""HTML -> the page's main text, with resiliparse (default) or trafilatura (optional).

``main_content=True`` drops navigation, headers, footers, sidebars and cookie
banners by resiliparse's element heuristics; it is ~14x faster than trafilatura on
the Common Crawl fixtures (PLATFORM.md, "Extraction speed"), which decides the
throughput of the whole prep path.

trafilatura (``extract.html: trafilatura``, ``pip install 'lmpipe[extras]'``) is the
extractor datatrove and FineWeb use. It runs with the settings below; it catches its
own parse errors and returns None for junk, which this stage drops as ``empty_text``.
"""

from __future__ import annotations

from typing import Any

from resiliparse.extract.html2text import extract_plain_text
from resiliparse.parse.html import HTMLParserException

from data_prep.config import ExtractConfig
from data_prep.document import Document
from data_prep.filters.base import BaseFilter
from pipeline.core.errors import ConfigError

TRAFILATURA_OPTIONS: dict[str, Any] = {
    "include_comments": False,
    "include_tables": False,
    "favor_precision": True,  # as datatrove: rather lose a paragraph than keep boilerplate
    "fast": False,  # as datatrove: with its fallback passes, fewer pages come out empty
    "deduplicate": False,  # its cache is process-wide: a page's text would depend on the pages before it
    "with_metadata": False,
}


def html_to_text(html: str) -> str:
    """Main text without image alt text (file names such as "prof_pic.jpg") or HTML comments."""
    return extract_plain_text(html, main_content=True, alt_texts=False, comments=False).strip()


def trafilatura_to_text(html: str) -> str:
    from trafilatura import extract  # optional: imported on first use, a dict lookup after that

    return (extract(html, **TRAFILATURA_OPTIONS) or "").strip()


def require_trafilatura() -> None:
    """A one-line ConfigError unless trafilatura can be imported."""
    try:
        import trafilatura  # noqa: F401
    except ImportError:
        raise ConfigError(
            "config error: extract.html: trafilatura is not installed; pip install 'lmpipe[extras]'"
        ) from None


class HtmlExtractor(BaseFilter):
    """Replaces ``doc.text`` (decoded HTML) with its main text; drops ``empty_text``."""

    name = "extract"
    document_errors = (HTMLParserException,)

    def __init__(self, cfg: ExtractConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or ExtractConfig()
        if self.cfg.html == "trafilatura":
            require_trafilatura()
            self.to_text = trafilatura_to_text
        else:
            self.to_text = html_to_text

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        doc.text = self.to_text(doc.text)
        return True if doc.text else (False, "empty_text")
