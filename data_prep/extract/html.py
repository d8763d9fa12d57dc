"""HTML -> the page's main text, with resiliparse (default) or trafilatura (optional).

``main_content=True`` drops navigation, headers, footers, sidebars and cookie
banners by resiliparse's element heuristics; it is ~14x faster than trafilatura on
the Common Crawl fixtures (PLATFORM.md, "Extraction speed"), which decides the
throughput of the whole prep path. Those heuristics drop every ``<ul>`` near the top
of the body or with over 20% link text, so a page whose content is a list or a
list-built table (a page of facts, a job board) came out as its title alone. Such a
page's main text is near-empty, so one cheap test finds it: below
``ExtractConfig.min_main_chars`` the same parsed tree is extracted again without the
heuristics, dropping only the page furniture HTML names (nav, header, footer, aside).
Only those pages pay for a second pass (bench/bench_extract.py measures F1 and speed).

trafilatura (``extract.html: trafilatura``, ``pip install 'lmpipe[extras]'``) is the
extractor datatrove and FineWeb use. It runs with the settings below; it catches its
own parse errors and returns None for junk, which this stage drops as ``empty_text``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from resiliparse.extract.html2text import extract_plain_text
from resiliparse.parse.html import HTMLParserException, HTMLTree

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


PAGE_FURNITURE = ["nav", "header", "footer", "aside"]
"""What the fallback pass still drops: the landmarks HTML itself marks as not the page's content."""


def html_to_text(html: str, min_main_chars: int = ExtractConfig.min_main_chars) -> str:
    """Main text without image alt text (file names such as "prof_pic.jpg") or comment sections;
    a page whose main text is under ``min_main_chars`` falls back to its text minus page furniture."""
    tree = HTMLTree.parse(html)
    text = extract_plain_text(tree, main_content=True, alt_texts=False, comments=False).strip()
    if len(text) >= min_main_chars:
        return text
    whole = extract_plain_text(tree, alt_texts=False, skip_elements=PAGE_FURNITURE).strip()
    return whole if len(whole) >= min_main_chars else text


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
            self.to_text: Callable[[str], str] = trafilatura_to_text
        else:
            self.to_text = partial(html_to_text, min_main_chars=self.cfg.min_main_chars)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        doc.text = self.to_text(doc.text)
        return True if doc.text else (False, "empty_text")
