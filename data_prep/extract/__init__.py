"""Extractors: raw payloads (HTML, wikitext) -> plain text, as filters that rewrite ``doc.text``."""

from data_prep.extract.html import HtmlExtractor, html_to_text
from data_prep.extract.wikitext import WikitextExtractor, wikitext_to_text

__all__ = ["HtmlExtractor", "WikitextExtractor", "html_to_text", "wikitext_to_text"]
