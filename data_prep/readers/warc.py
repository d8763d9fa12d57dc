"""Stream the HTML responses of a WARC file (``.warc.gz`` or ``.warc``) as documents.

fastwarc does the parsing and the HTTP content/transfer decoding. What it does not
do is survive damage: a corrupt gzip member raises and ends its iterator, and a
truncated file ends it silently with a short last record. Crawls are big and
damage is normal, so this reader counts each damaged spot as one ``errors`` entry
(``file:offset``) and carries on from the next record boundary: the next gzip
member (Common Crawl writes one per record) or the next ``WARC/1.x`` line.

Counted per response record: ``input``; ``dropped`` ``not_html`` (images,
robots.txt, PDFs), ``binary_content`` (a PDF or image labelled text/html) and
``too_large`` (a payload over :data:`MAX_PAYLOAD_BYTES`, not read into memory);
``errors`` ``corrupt_stream``, ``truncated_record`` and ``malformed_header`` (a
missing or non-numeric Content-Length: the reader resyncs at the next record);
``counts`` ``charset_fallback`` (a body that is not valid in its declared charset,
decoded by sniffing instead). Other record types (warcinfo, request, metadata) are
not documents and are not counted.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Generator, Iterator
from typing import Any, BinaryIO

from fastwarc.warc import ArchiveIterator, WarcRecord, WarcRecordType
from resiliparse.parse.encoding import bytes_to_str, detect_encoding

from data_prep.document import Document
from data_prep.inputs import input_name, location_of, open_input
from data_prep.stats import StageStats

HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
GZIP_MAGIC = b"\x1f\x8b\x08"
WARC_MAGIC = b"WARC/1."
_SCAN_CHUNK = 1 << 20
_NON_SPACE = re.compile(rb"\S")
MAX_PAYLOAD_BYTES = 8 << 20
"""HTML payloads above this (after HTTP decoding) are dropped as ``too_large``: Common Crawl cuts
at 1 MiB, and a bigger page is rarely prose but can cost seconds and hundreds of MB downstream."""
BINARY_MAGIC = (
    b"%PDF-",
    b"\x89PNG",
    b"\xff\xd8\xff",
    b"GIF8",
    b"PK\x03\x04",
    b"\x1f\x8b",
    b"RIFF",
    b"\x00\x00\x01\x00",
)

Convert = Callable[[WarcRecord, StageStats, str, str], "Document | None"]
"""(record, stats, location, file name) -> the document (kept, counted by the caller), or None
(dropped or an error, counted by the converter). An OSError while reading the body is damage."""


def read_warc(path: Any, stats: StageStats) -> Iterator[Document]:
    yield from read_archive(path, stats, WarcRecordType.response, _html_response, parse_http=True)


def read_archive(
    source: Any, stats: StageStats, record_type: WarcRecordType, convert: Convert, *, parse_http: bool
) -> Iterator[Document]:
    """The records of ``record_type`` in a WARC-format file (WARC, WET), through ``convert``,
    surviving damage."""
    where, name = location_of(source), input_name(source)
    with open_input(source) as f:
        marker = GZIP_MAGIC if f.read(3) == GZIP_MAGIC else WARC_MAGIC
        args = (where, name, marker, stats, record_type, convert, parse_http)
        offset = yield from _read_from(f, 0, *args, in_damage=False)
        while offset is not None:
            offset = yield from _read_from(f, offset, *args, in_damage=True)


def _read_from(
    f: BinaryIO,
    offset: int,
    path: str,
    name: str,
    marker: bytes,
    stats: StageStats,
    record_type: WarcRecordType,
    convert: Convert,
    parse_http: bool,
    *,
    in_damage: bool,
) -> Generator[Document, None, int | None]:
    """Yield documents from ``offset`` on; on damage, return the next record boundary to try
    (None: end of file).

    A damaged spot is counted once: a retry that fails before any record (``in_damage``)
    is the same spot, and the retries walk it boundary by boundary until records parse again.
    """
    f.seek(offset)
    # fastwarc skips the other record types (requests, metadata) itself, without parsing their HTTP
    # headers: a third of a crawl's records. After damage the walk restarts past the last record seen.
    records = iter(
        ArchiveIterator(
            f, record_types=record_type, parse_http=parse_http, auto_decode="all" if parse_http else "none"
        )
    )
    last_start = None
    while True:
        try:
            record = next(records)
        except StopIteration:
            return None
        except OSError as exc:
            resume = _find(f, marker, (offset if last_start is None else last_start) + 1)
            if last_start is not None or not in_damage:
                stats.input += 1  # a damaged spot stands for (at least) one lost record
                where = offset if last_start is None else resume
                stats.error("corrupt_stream", f"{path}:{where if where is not None else 'end'} ({exc})")
            return resume
        last_start = record.stream_pos
        stats.input += 1
        length = record.headers.get("Content-Length")
        if length is None or not length.strip().isdigit():
            # Cut at the end of the file (the header itself is cut), or a malformed header: either
            # way the record's extent is unknown, so resync at the next boundary (counted once).
            resume = _find(f, marker, record.stream_pos + 1)
            kind = "truncated_record" if length is None and resume is None else "malformed_header"
            stats.error(kind, f"{path}:{record.stream_pos}")
            return resume
        try:
            doc = convert(record, stats, path, name)
        except OSError as exc:
            stats.error("corrupt_stream", f"{path}:{record.stream_pos} ({exc})")
            return _find(f, marker, record.stream_pos + 1)
        if doc is not None:
            yield doc


def _html_response(record: WarcRecord, stats: StageStats, path: str, name: str) -> Document | None:
    content_type = (record.http_content_type or "").lower()
    if content_type not in HTML_TYPES:
        if not content_type and _is_cut(record):  # the file ends inside the HTTP headers
            stats.error("truncated_record", f"{path}:{record.stream_pos}")
            return None
        stats.drop("not_html")
        return None
    if record.content_length > MAX_PAYLOAD_BYTES + (1 << 16):  # + room for the HTTP headers
        stats.drop("too_large")
        return None
    body = record.reader.read(MAX_PAYLOAD_BYTES + 1)  # bounded: a compressed payload can inflate
    if len(body) > MAX_PAYLOAD_BYTES:
        stats.drop("too_large")
        return None
    if record.reader.tell() < record.content_length and not _was_decoded(record):
        stats.error("truncated_record", f"{path}:{record.stream_pos}")
        return None
    if _looks_binary(body):
        stats.drop("binary_content")
        return None
    stats.keep(len(body))
    return _document(record, body, name, stats)


def _looks_binary(body: bytes) -> bool:
    """A file format's magic bytes after any leading whitespace (found without copying the body, as
    ``lstrip`` did), or a NUL byte near the start."""
    first = _NON_SPACE.search(body)
    return (first is not None and body.startswith(BINARY_MAGIC, first.start())) or b"\x00" in body[:1024]


def _document(record: WarcRecord, body: bytes, name: str, stats: StageStats) -> Document:
    record_date = record.record_date
    return Document(
        id=(record.record_id or f"{name}:{record.stream_pos}").strip("<>"),
        text=_decode(body, record.http_charset, stats),
        source="cc",
        url=(record.headers.get("WARC-Target-URI") or "").strip("<>"),  # wget writes <url>
        metadata={
            "date": record_date.isoformat() if record_date else "",
            "warc_file": name,
            "offset": record.stream_pos,
        },
    )


def _is_cut(record: WarcRecord) -> bool:
    """Whether the block ends before its Content-Length (read through in chunks, not kept)."""
    while record.reader.read(_SCAN_CHUNK):
        pass
    return record.reader.tell() < record.content_length and not _was_decoded(record)


def _was_decoded(record: WarcRecord) -> bool:
    """Chunked or compressed payloads shrink when fastwarc decodes them, so their length proves nothing."""
    headers = record.http_headers
    return any(
        (headers.get(name, "identity") or "").lower() != "identity"
        for name in ("Transfer-Encoding", "Content-Encoding")
    )


def _decode(body: bytes, declared: str | None, stats: StageStats | None = None) -> str:
    """Trust the HTTP header's charset when Python knows it and the body is valid in it; otherwise
    sniff (BOM, <meta>, content). A body invalid in its declared charset (latin-1 bytes labelled
    utf-8, stray bytes) is counted as ``charset_fallback``; undecodable bytes never raise."""
    if declared:
        try:
            return body.decode(declared).removeprefix("\ufeff")
        except LookupError:
            pass
        except UnicodeDecodeError:
            if stats is not None:
                stats.count("charset_fallback")
    return bytes_to_str(body, detect_encoding(body, from_html_meta=True) or "utf-8", errors="replace")


def _find(f: BinaryIO, marker: bytes, start: int) -> int | None:
    """Offset of the next ``marker`` at or after ``start``, or None."""
    f.seek(start)
    position = start
    tail = b""
    while chunk := f.read(_SCAN_CHUNK):
        window = tail + chunk
        found = window.find(marker)
        if found >= 0:
            return position - len(tail) + found
        tail = window[-(len(marker) - 1) :]
        position += len(chunk)
    return None
