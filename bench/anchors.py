"""The raw-resiliparse anchor that the data-prep benchmarks measure lmpipe against."""

from __future__ import annotations

from pathlib import Path

from fastwarc.warc import ArchiveIterator, WarcRecordType
from resiliparse.extract.html2text import extract_plain_text
from resiliparse.parse.encoding import bytes_to_str, detect_encoding
from resiliparse.parse.lang import detect_fast

HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})


def resiliparse_anchor(paths: list[Path], *, detect: bool = True, langs: set[str] | None = None) -> int:
    """Extract every HTML response with resiliparse (and ``detect_fast`` its language);
    returns the response records seen. ``langs`` collects the detected languages."""
    n = 0
    for path in paths:
        with open(path, "rb") as f:
            for record in ArchiveIterator(
                f, record_types=WarcRecordType.response, parse_http=True, auto_decode="all"
            ):
                n += 1
                if (record.http_content_type or "").lower() not in HTML_TYPES:
                    continue
                body = record.reader.read()
                text = extract_plain_text(
                    bytes_to_str(body, detect_encoding(body, from_html_meta=True)), main_content=True
                )
                if detect:
                    lang = detect_fast(text)[0]
                    if langs is not None:
                        langs.add(lang)
    return n
