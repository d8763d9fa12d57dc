"""Stream the HTML responses of a WARC file (``.warc.gz`` or ``.warc``) as documents.

fastwarc does the parsing and the HTTP content/transfer decoding. What it does not
do is survive damage: a corrupt gzip member raises and ends its iterator, and a
truncated file ends it silently with a short last record. Crawls are big and
damage is normal, so this reader counts each damaged spot as one ``errors`` entry
(``file:offset``) and carries on from the next record boundary: the next gzip
member (Common Crawl writes one per record) or the next ``WARC/1.x`` line.

Counted per response record: ``input``; ``dropped`` ``not_html`` (images,
robots.txt, PDFs); ``errors`` ``corrupt_stream`` and ``truncated_record``. Other
record types (warcinfo, request, metadata) are not documents and are not counted.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Generator, Iterator

from fastwarc.warc import ArchiveIterator, WarcRecord, WarcRecordType
from resiliparse.parse.encoding import bytes_to_str, detect_encoding

from data_prep.document import Document
from data_prep.stats import StageStats

HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
GZIP_MAGIC = b"\x1f\x8b\x08"
WARC_MAGIC = b"WARC/1."
_SCAN_CHUNK = 1 << 20


def read_warc(path: Path, stats: StageStats) -> Iterator[Document]:
    with open(path, "rb") as f:
        marker = GZIP_MAGIC if f.read(3) == GZIP_MAGIC else WARC_MAGIC
        offset = yield from _read_from(f, 0, path, marker, stats, in_damage=False)
        while offset is not None:
            offset = yield from _read_from(f, offset, path, marker, stats, in_damage=True)


def _read_from(f: BinaryIO, offset: int, path: Path, marker: bytes, stats: StageStats, *,
               in_damage: bool) -> Generator[Document, None, int | None]:
    """Yield documents from ``offset`` on; on damage, return the next record boundary to try (None: end of file).

    A damaged spot is counted once: a retry that fails before any record (``in_damage``)
    is the same spot, and the retries walk it boundary by boundary until records parse again.
    """
    f.seek(offset)
    records = iter(ArchiveIterator(f, parse_http=True, auto_decode="all"))
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
        if record.record_type != WarcRecordType.response:
            continue
        stats.input += 1
        if "Content-Length" not in record.headers:
            stats.error("truncated_record", f"{path}:{record.stream_pos}")  # the header itself is cut
            continue
        if (record.http_content_type or "").lower() not in HTML_TYPES:
            stats.drop("not_html")
            continue
        try:
            body = record.reader.read()
        except OSError as exc:
            stats.error("corrupt_stream", f"{path}:{record.stream_pos} ({exc})")
            return _find(f, marker, record.stream_pos + 1)
        if record.reader.tell() < record.content_length and not _was_decoded(record):
            stats.error("truncated_record", f"{path}:{record.stream_pos}")
            continue
        stats.keep(len(body))
        yield _document(record, body, path)


def _document(record: WarcRecord, body: bytes, path: Path) -> Document:
    record_date = record.record_date
    return Document(
        id=(record.record_id or f"{path.name}:{record.stream_pos}").strip("<>"),
        text=_decode(body, record.http_charset),
        source="cc",
        url=record.headers.get("WARC-Target-URI", "").strip("<>"),  # wget writes <url>
        metadata={"date": record_date.isoformat() if record_date else "", "warc_file": path.name,
                  "offset": record.stream_pos},
    )


def _was_decoded(record: WarcRecord) -> bool:
    """Chunked or compressed payloads shrink when fastwarc decodes them, so their length proves nothing."""
    headers = record.http_headers
    return any(headers.get(name, "identity").lower() != "identity"
               for name in ("Transfer-Encoding", "Content-Encoding"))


def _decode(body: bytes, declared: str | None) -> str:
    """Trust the HTTP header's charset when Python knows it; otherwise sniff (BOM, <meta>, content)."""
    if declared:
        try:
            return bytes_to_str(body, declared)
        except LookupError:
            pass
    return bytes_to_str(body, detect_encoding(body, from_html_meta=True))


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
        tail = window[-(len(marker) - 1):]
        position += len(chunk)
    return None
