"""Stream the articles of a MediaWiki XML dump (``.xml``, ``.xml.bz2``, ``.xml.gz``) as documents.

``iterparse`` with the root cleared after every page keeps memory flat on a 20 GB
dump. Tags are matched without their namespace, so every export schema version
(0.3 ... 0.11) reads the same; expat decodes UTF-16 dumps from their BOM; the
``<siteinfo>`` block is optional. Only articles become documents: a page outside
namespace 0, a redirect or a disambiguation page is dropped with that reason.
A malformed or cut-off file ends with one ``errors`` entry naming the spot: the
pages before it are kept.
"""

from __future__ import annotations

import bz2
import gzip
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from data_prep.document import Document
from data_prep.inputs import location_of, open_input
from data_prep.stats import StageStats

XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
_REDIRECT = re.compile(r"\s*#[^\s\[]+\s*:?\s*\[\[")
"""``#REDIRECT [[X]]`` in any language (``#WEITERLEITUNG``, ``#ПРЕНАСОЧВАНЕ``); old schemas have
no <redirect>."""
_DISAMBIGUATION = re.compile(
    r"\{\{\s*(disambig\w*|dab|hndis|geodis|numberdis|shipindex|begriffsklärung|homonymie|desambiguación|"
    r"disambigua|пояснение|многозначность)\s*[|}]",
    re.IGNORECASE,
)


def read_wikipedia(source: Any, stats: StageStats) -> Iterator[Document]:
    path = location_of(source)
    with _open(source) as f:
        events = ET.iterparse(f, events=("start", "end"))
        try:
            _, root = next(events)
            wiki = f"{root.get(XML_LANG, '')}wiki"
            namespaces: dict[str, int] = {}
            for event, elem in events:
                if event != "end":
                    continue
                tag = _local(elem.tag)
                if tag == "page":
                    stats.input += 1
                    verdict = _article(elem, wiki, namespaces)
                    root.clear()  # drop the finished page so memory stays flat
                    if isinstance(verdict, str):
                        stats.drop(verdict)
                    else:
                        stats.keep(len(verdict.text.encode()))
                        yield verdict
                elif tag == "dbname" and elem.text:
                    wiki = elem.text.strip()
                elif tag == "namespace" and elem.text:
                    namespaces[elem.text.strip()] = int(elem.get("key", "0"))
        except ET.ParseError as exc:
            line, column = exc.position
            stats.input += 1
            stats.error("xml_parse", f"{path}:{line}:{column} ({exc})")
        except (EOFError, OSError) as exc:  # a cut or corrupt .bz2/.gz
            stats.input += 1
            stats.error("truncated_file", f"{path} ({exc})")


@contextmanager
def _open(source: Any) -> Iterator[IO[bytes]]:
    """The dump's XML bytes: bz2 and gzip told apart by their magic, not the name."""
    with open_input(source) as raw:
        magic = raw.read(3)
        raw.seek(0)
        if magic == b"BZh":
            with bz2.BZ2File(raw, "rb") as f:
                yield f
        elif magic[:2] == b"\x1f\x8b":
            with gzip.GzipFile(fileobj=raw, mode="rb") as f:
                yield f  # type: ignore[misc]  # a GzipFile is a binary file, typeshed says otherwise
        else:
            yield raw


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _article(page: ET.Element, wiki: str, namespaces: dict[str, int]) -> Document | str:
    """The page as a document, or the reason it is not an article."""
    fields: dict[str, Any] = {}
    for child in page:
        name = _local(child.tag)
        fields[name] = child if name == "revision" else (child.text or "")  # the last revision wins
    title = fields.get("title", "").strip()
    if "ns" in fields:
        namespace = int(fields["ns"]) if fields["ns"].strip().lstrip("-").isdigit() else -1
    else:  # export schemas before 0.6: the namespace is the title's prefix
        prefix, colon, _ = title.partition(":")
        namespace = namespaces.get(prefix, 0) if colon else 0
    if namespace != 0:
        return "not_article_namespace"
    revision = {_local(child.tag): child.text or "" for child in fields.get("revision", [])}
    text = revision.get("text", "")
    if "redirect" in fields or _REDIRECT.match(text):
        return "redirect"
    if title.endswith("(disambiguation)") or _DISAMBIGUATION.search(text):
        return "disambiguation"
    page_id = fields.get("id", "").strip()
    return Document(
        id=f"{wiki}:{page_id}",
        text=text,
        source="wiki",
        url=title,
        metadata={
            "wiki": wiki,
            "page_id": int(page_id) if page_id.isdigit() else page_id,
            "revision_id": revision.get("id", "").strip(),
            "timestamp": revision.get("timestamp", "").strip(),
        },
    )
