"""The one in-memory record every data-prep stage passes along (DESIGN §4)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Document:
    """A document on its way from a raw file to ``docs/*.parquet``.

    Readers fill ``text`` with the raw payload (HTML, wikitext); the extract stage
    replaces it with plain text, so later stages only ever see prose.
    """

    id: str
    """Stable across reruns: the WARC record id, or ``<dbname>:<page id>`` for wiki pages."""
    text: str
    source: str
    """Where it came from: ``cc`` (web crawl) or ``wiki``."""
    url: str = ""
    """The page URL, or the article title for wiki pages."""
    metadata: dict[str, Any] = field(default_factory=dict)
