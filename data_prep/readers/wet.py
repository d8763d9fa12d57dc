"""Stream the text of a Common Crawl WET file (``.warc.wet.gz``) as documents.

WET ``conversion`` records hold the text Common Crawl already extracted from each
page (UTF-8), so these documents skip HTML extraction (format ``wet`` is in
``PRE_EXTRACTED``). Parsing and damage handling are the WARC reader's.

Counted per conversion record: ``input``; ``dropped`` ``empty_text``; ``errors``
``corrupt_stream`` and ``truncated_record``. warcinfo records are not counted.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastwarc.warc import WarcRecord, WarcRecordType

from data_prep.document import Document
from data_prep.readers.warc import read_archive
from data_prep.stats import StageStats


def read_wet(path: Any, stats: StageStats) -> Iterator[Document]:
    yield from read_archive(path, stats, WarcRecordType.conversion, _conversion, parse_http=False)


def _conversion(record: WarcRecord, stats: StageStats, path: str, name: str) -> Document | None:
    body = record.reader.read()
    if record.reader.tell() < record.content_length:
        stats.error("truncated_record", f"{path}:{record.stream_pos}")
        return None
    text = body.decode("utf-8", errors="replace")
    if not text.strip():
        stats.drop("empty_text")
        return None
    stats.keep(len(body))
    headers = record.headers
    record_date = record.record_date
    return Document(
        id=(record.record_id or f"{name}:{record.stream_pos}").strip("<>"),
        text=text,
        source="cc",
        url=(headers.get("WARC-Target-URI") or "").strip("<>"),
        metadata={
            "date": record_date.isoformat() if record_date else "",
            "warc_file": name,
            "offset": record.stream_pos,
            "language": headers.get("WARC-Identified-Content-Language", ""),
            "refers_to": (headers.get("WARC-Refers-To") or "").strip("<>"),
        },
    )
