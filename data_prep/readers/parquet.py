"""Stream a Parquet file with our ``docs/*.parquet`` columns (DESIGN §4) as documents, a batch at a time.

Columns: ``text`` (required), optional ``id`` (default ``<file>:<row>``), ``source``
(default ``parquet``), ``url`` and ``metadata`` (a JSON string or a struct/map).
Counted per row: ``input``; ``dropped`` ``empty_text`` (null or blank). A file with no
``text`` column is one ``errors`` ``missing_text_column`` entry naming the columns it has;
a file that is not Parquet, or is cut, is one ``corrupt_file`` entry (rows before it kept).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from data_prep.document import Document
from data_prep.inputs import input_name, location_of, open_input
from data_prep.stats import StageStats

COLUMNS = ("id", "text", "source", "url", "metadata")
BATCH_ROWS = 1024


def read_parquet(
    source: Any, stats: StageStats, *, default_source: str = "parquet", batch_rows: int = BATCH_ROWS
) -> Iterator[Document]:
    path, name = location_of(source), input_name(source)
    with open_input(source) as f:
        row = 0
        try:
            parquet = pq.ParquetFile(f)
            present = parquet.schema_arrow.names
            if "text" not in present:
                stats.input += 1
                stats.error("missing_text_column", f"{path} (no 'text' column; it has: {', '.join(present)})")
                return
            columns = [c for c in COLUMNS if c in present]
            for batch in parquet.iter_batches(batch_size=batch_rows, columns=columns):
                for record in batch.to_pylist():
                    row += 1
                    stats.input += 1
                    text = record.get("text")
                    if not isinstance(text, str) or not text.strip():
                        stats.drop("empty_text")
                        continue
                    stats.keep(len(text.encode("utf-8", errors="surrogatepass")))
                    yield Document(
                        id=str(record["id"]) if record.get("id") is not None else f"{name}:{row - 1}",
                        text=text,
                        source=record.get("source") or default_source,
                        url=record.get("url") or "",
                        metadata=column_metadata(record.get("metadata")),
                    )
        except (pa.ArrowException, OSError) as exc:
            stats.input += 1
            stats.error("corrupt_file", f"{path}:row {row} ({exc})")


def column_metadata(value: Any) -> dict[str, Any]:
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return {"metadata": value}
        return parsed if isinstance(parsed, dict) else {"metadata": parsed}
    if isinstance(value, list):  # a map column comes back as [(key, value), ...]
        try:
            return dict(value)
        except (TypeError, ValueError):
            return {"metadata": value}
    return dict(value) if isinstance(value, dict) else {"metadata": value}
