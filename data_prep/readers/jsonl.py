"""Stream a JSON Lines file (``.jsonl``, ``.jsonl.gz``, ``.jsonl.zst``) as documents, one object a line.

Fields (datatrove style): ``text`` (required, a string), optional ``id`` (default
``<file>:<line>``), ``url``, ``source`` (default ``jsonl``) and ``metadata`` (an object,
or a JSON string of one); any other field goes into the metadata too. Compression is
told by magic bytes (gzip, zstd through pyarrow), not by name.

Counted per non-blank line: ``input``; ``dropped`` ``empty_text``; ``errors``
``invalid_utf8``, ``invalid_json``, ``missing_text`` (with ``file:line``), and once
``truncated_file`` for a cut or corrupt compressed stream (the lines before it are kept).

JSON may escape half of a surrogate pair (``"\\udc80"``), which decodes to a string that cannot
be UTF-8: every later stage (Arrow arrays, the Parquet writer) would fail on it. Such halves
become U+FFFD in every field, and ``counts`` says how many documents had them
(``lone_surrogates``).
"""

from __future__ import annotations

import gzip
import io
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from data_prep.document import Document
from data_prep.inputs import input_name, location_of, open_input
from data_prep.stats import StageStats

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def read_jsonl(
    source: Any,
    stats: StageStats,
    *,
    text_key: str = "text",
    id_key: str = "id",
    url_key: str = "url",
    source_key: str = "source",
    metadata_key: str = "metadata",
    default_source: str = "jsonl",
) -> Iterator[Document]:
    path, name = location_of(source), input_name(source)
    known = {text_key, id_key, url_key, source_key, metadata_key}
    with _open(source) as f:
        line_no = 0
        try:
            for raw in f:
                line_no += 1
                if not raw.strip():
                    continue
                stats.input += 1
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    stats.error("invalid_utf8", f"{path}:{line_no} ({exc.reason} at byte {exc.start})")
                    continue
                try:
                    row = json.loads(line.rstrip("\r\n"))
                except json.JSONDecodeError as exc:
                    stats.error("invalid_json", f"{path}:{line_no} ({exc.msg} at column {exc.colno})")
                    continue
                if "\\u" in line and _ESCAPED_SURROGATE.search(line):  # cheap: most lines escape nothing
                    fixed = _without_surrogates(row)
                    if fixed != row:
                        stats.count("lone_surrogates")
                        row = fixed
                text = row.get(text_key) if isinstance(row, dict) else None
                if not isinstance(text, str):
                    stats.error("missing_text", f"{path}:{line_no} (no string {text_key!r} field)")
                    continue
                if not text.strip():
                    stats.drop("empty_text")
                    continue
                metadata = _metadata(row.get(metadata_key))
                metadata.update((key, value) for key, value in row.items() if key not in known)
                stats.keep(len(text.encode("utf-8")))
                yield Document(
                    id=str(row[id_key]) if row.get(id_key) is not None else f"{name}:{line_no}",
                    text=text,
                    source=str(row.get(source_key) or default_source),
                    url=str(row.get(url_key) or ""),
                    metadata=metadata,
                )
        except (EOFError, OSError) as exc:  # a cut or corrupt .gz/.zst
            stats.input += 1
            stats.error("truncated_file", f"{path}:{line_no + 1} ({exc})")


def _metadata(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, str) and value:
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return {"metadata": value}
        return dict(parsed) if isinstance(parsed, dict) else {"metadata": parsed}
    return {} if value is None else {"metadata": value}


@contextmanager
def _open(source: Any) -> Iterator[IO[bytes]]:
    with open_input(source) as raw:
        magic = raw.read(4)
        raw.seek(0)
        if magic[:2] == b"\x1f\x8b":
            with gzip.GzipFile(fileobj=raw, mode="rb") as f:
                yield f  # type: ignore[misc]  # a GzipFile is a binary file, typeshed says otherwise
        elif magic == ZSTD_MAGIC:
            import pyarrow as pa  # zstd without another dependency

            stream = pa.CompressedInputStream(pa.PythonFile(raw, mode="r"), "zstd")
            with io.BufferedReader(stream, buffer_size=1 << 20) as f:
                yield f
        else:
            yield raw


def _without_surrogates(value: Any) -> Any:
    """A parsed JSON value with every lone surrogate in its strings (keys too) replaced by U+FFFD."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_without_surrogates(item) for item in value]
    if isinstance(value, dict):
        return {_without_surrogates(key): _without_surrogates(item) for key, item in value.items()}
    return value
