"""Readers turn one input file into a stream of raw documents, counting what they skip.

Every reader is ``read(location, stats) -> Iterator[Document]``: a generator that holds one
record (or one batch) at a time, so a file of any size reads in constant memory. ``location``
is a local path, a URL or an :class:`data_prep.inputs.InputFile`; readers open it with
:func:`data_prep.inputs.open_input`, so remote files read like local ones.

Formats: ``warc`` (HTML responses), ``wet`` (Common Crawl extracted text: no HTML
extraction needed, see :data:`data_prep.formats.PRE_EXTRACTED`), ``wat`` (metadata only: recognised and
skipped), ``wiki`` (MediaWiki XML dumps), ``jsonl``, ``parquet``, ``hf`` (a directory
written by ``datasets.Dataset.save_to_disk``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from data_prep.document import Document
from data_prep.readers.hf import read_hf
from data_prep.readers.jsonl import read_jsonl
from data_prep.readers.parquet import read_parquet
from data_prep.readers.warc import read_warc
from data_prep.readers.wat import read_wat
from data_prep.readers.wet import read_wet
from data_prep.readers.wikipedia import read_wikipedia
from data_prep.stats import StageStats

Reader = Callable[[Any, StageStats], Iterator[Document]]
READERS: dict[str, Reader] = {
    "warc": read_warc,
    "wet": read_wet,
    "wat": read_wat,
    "wiki": read_wikipedia,
    "jsonl": read_jsonl,
    "parquet": read_parquet,
    "hf": read_hf,
}

__all__ = ["READERS", "Reader"]
