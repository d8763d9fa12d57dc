"""Wikitext -> plain prose: section headings and paragraphs, none of the machinery.

mwparserfromhell parses the markup; we walk its nodes and keep only what a reader
sees as running text. Templates (infoboxes, citations, navboxes), ``<ref>``s,
tables, galleries, files and images, categories, interlanguage links and comments
go; link labels, bold and italic text, list items and headings stay. Our own walk
instead of ``strip_code`` because strip_code keeps table cells and image captions
and cannot say which lines are headings, so empty sections (References, External
links) could not be dropped.
"""

from __future__ import annotations

import re

import mwparserfromhell
from mwparserfromhell.nodes import ExternalLink, Heading, HTMLEntity, Tag, Text, Wikilink
from mwparserfromhell.wikicode import Wikicode

from data_prep.document import Document
from data_prep.filters.base import BaseFilter

DROPPED_TAGS = frozenset(
    {
        "ref",
        "references",
        "table",
        "gallery",
        "math",
        "chem",
        "score",
        "timeline",
        "graph",
        "imagemap",
        "mapframe",
        "syntaxhighlight",
        "source",
        "templatedata",
        "hiero",
        "inputbox",
    }
)
LINE_BREAK_TAGS = frozenset({"br", "li", "dt", "dd", "p", "div"})
MEDIA_NAMESPACES = frozenset(
    {
        "file",
        "image",
        "media",
        "category",  # en, and the canonical names every wiki accepts
        "datei",
        "bild",
        "kategorie",
        "fichier",
        "catégorie",  # de, fr
        "archivo",
        "imagen",
        "categoría",
        "categoria",
        "ficheiro",  # es, it, pt
        "файл",
        "изображение",
        "категория",
        "kategoria",
        "plik",  # bg, ru, pl
    }
)
"""Link prefixes whose links are not text: images and files, category tags."""
_HEADING = "\x00"
"""Marks a heading line (followed by its level digit) between the walk and the clean-up."""
_MAGIC_WORD = re.compile(r"__[A-Z]+__")
_EMPTY_PARENS = re.compile(r"\(\s*[,;:]?\s*\)")
_SPACE_BEFORE_PUNCT = re.compile(r" +([,.;:])")
_SPACES = re.compile(r"[ \t\u00a0]+")
_LANGUAGE_CODE = re.compile(r"[a-z]{2,3}(-[a-z]+)*")


_REFS_AND_COMMENTS = re.compile(
    r"<ref\b[^>]*?/>|<ref\b[^>]*>.*?</ref\s*>|<!--.*?-->", re.IGNORECASE | re.DOTALL
)
"""Cut before parsing: a ``<ref>`` holding unbalanced markup (an italic ``''`` never closed) is not
parsed as a tag and would leak into the text; and refs are a large share of article wikitext,
so the parser has less to do."""


def wikitext_to_text(wikitext: str) -> str:
    return _clean(_render(mwparserfromhell.parse(_REFS_AND_COMMENTS.sub("", wikitext))))


def _render(code: Wikicode) -> str:
    """Concatenate the visible prose of ``code``; templates, comments and arguments add nothing."""
    parts: list[str] = []
    for node in code.nodes:
        if isinstance(node, Text):
            parts.append(node.value)
        elif isinstance(node, Wikilink):
            parts.append(_link_text(node))
        elif isinstance(node, Heading):
            parts.append(f"\n{_HEADING}{node.level}{_render(node.title).strip()}\n")
        elif isinstance(node, Tag):
            tag = str(node.tag).strip().lower()
            if tag in DROPPED_TAGS:
                continue
            if tag in LINE_BREAK_TAGS:
                parts.append("\n")
            if node.contents is not None and not node.self_closing:
                parts.append(_render(node.contents))
        elif isinstance(node, ExternalLink):
            parts.append(_render(node.title) if node.title else "")
        elif isinstance(node, HTMLEntity):
            parts.append(node.normalize())
    return "".join(parts)


def _link_text(link: Wikilink) -> str:
    """``[[Paris]]``, ``[[Paris|the capital]]`` are prose; ``[[File:..]]``, ``[[Category:..]]``,
    ``[[de:Paris]]`` are not."""
    target = str(link.title).strip()
    if target.startswith(":"):  # [[:Category:Towns]] is a visible link to the category page
        return _render(link.text) if link.text else target[1:]
    prefix, colon, _ = target.partition(":")
    prefix = prefix.strip().lower()
    if colon and prefix in MEDIA_NAMESPACES:
        return ""
    if link.text:
        return _render(link.text)
    return "" if colon and _LANGUAGE_CODE.fullmatch(prefix) else target


def _clean(raw: str) -> str:
    """Tidy lines; drop list markers, and headings of sections left empty (References, External links)."""
    lines: list[str] = []
    for line in raw.splitlines():
        line = _MAGIC_WORD.sub("", line)
        line = _EMPTY_PARENS.sub("", line)
        line = _SPACE_BEFORE_PUNCT.sub(r"\1", _SPACES.sub(" ", line)).strip()
        if line.startswith(_HEADING):
            lines.append(line)
        elif line.strip("*#:;'= "):
            lines.append(line.lstrip("*#:; "))
    kept: list[str] = []
    for i, line in enumerate(lines):
        if line.startswith(_HEADING):
            following = next(
                (later for later in lines[i + 1 :] if not later.startswith(_HEADING) or later[1] <= line[1]),
                None,
            )
            if following is None or following.startswith(_HEADING):
                continue  # nothing but (empty) subsections up to the next heading of its level
            line = line[2:]
        kept.append(line)
    return "\n".join(kept)


class WikitextExtractor(BaseFilter):
    """Replaces ``doc.text`` (wikitext) with plain prose; drops ``empty_text``."""

    name = "extract"

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        doc.text = wikitext_to_text(doc.text)
        return True if doc.text else (False, "empty_text")
