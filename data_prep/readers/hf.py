"""Stream a Hugging Face dataset saved with ``save_to_disk`` (a local directory) as documents, in batches.

A ``Dataset`` directory has ``dataset_info.json`` and ``state.json``; a ``DatasetDict``
has ``dataset_dict.json`` and one such directory per split (read in sorted order, the
split kept in the metadata). The data is memory-mapped Arrow, so reading is flat in memory.
Columns as for Parquet: ``text`` required; ``id``, ``source``, ``url``, ``metadata``
optional; other columns are ignored. Counted as the Parquet reader counts.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from data_prep.document import Document
from data_prep.inputs import input_name, location_of
from data_prep.readers.parquet import column_metadata
from data_prep.stats import StageStats

BATCH_ROWS = 1024

__all__ = ["BATCH_ROWS", "read_hf"]


def read_hf(
    source: Any, stats: StageStats, *, default_source: str = "hf", batch_rows: int = BATCH_ROWS
) -> Iterator[Document]:
    from datasets import Dataset, DatasetDict, load_from_disk  # slow to import: only when needed

    path, name = location_of(source), input_name(source)
    loaded = load_from_disk(path)
    splits: list[tuple[str | None, Dataset]] = (
        sorted(loaded.items()) if isinstance(loaded, DatasetDict) else [(None, loaded)]
    )
    for split, dataset in splits:
        where = f"{path}[{split}]" if split else path
        if "text" not in dataset.column_names:
            stats.input += 1
            stats.error(
                "missing_text_column",
                f"{where} (no 'text' column; it has: {', '.join(dataset.column_names)})",
            )
            continue
        columns = [c for c in ("id", "text", "source", "url", "metadata") if c in dataset.column_names]
        dataset = dataset.select_columns(columns)
        row = 0
        for batch in dataset.iter(batch_size=batch_rows):
            for i, text in enumerate(batch["text"]):
                stats.input += 1
                index = row + i
                if not isinstance(text, str) or not text.strip():
                    stats.drop("empty_text")
                    continue
                stats.keep(len(text.encode("utf-8", errors="surrogatepass")))
                doc_id = batch["id"][i] if "id" in batch else None
                metadata = column_metadata(batch["metadata"][i]) if "metadata" in batch else {}
                if split:
                    metadata["split"] = split
                yield Document(
                    id=str(doc_id) if doc_id is not None else f"{name}:{split + ':' if split else ''}{index}",
                    text=text,
                    source=(batch["source"][i] if "source" in batch else None) or default_source,
                    url=(batch["url"][i] if "url" in batch else None) or "",
                    metadata=metadata,
                )
            row += len(batch["text"])
