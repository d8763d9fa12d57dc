"""Readers turn one input file into a stream of raw documents, counting what they skip.

Every reader is ``read(location, stats) -> Iterator[Document]``: a generator that holds one
record (or one batch) at a time, so a file of any size reads in constant memory. ``location``
is a local path, a URL or an :class:`data_prep.inputs.InputFile`; readers open it with
:func:`data_prep.inputs.open_input`, so remote files read like local ones.

Formats: ``warc`` (HTML responses), ``wet`` (Common Crawl extracted text: no HTML
extraction needed, see :data:`PRE_EXTRACTED`), ``wat`` (metadata only: recognised and
skipped), ``wiki`` (MediaWiki XML dumps), ``jsonl``, ``parquet``, ``hf`` (a directory
written by ``datasets.Dataset.save_to_disk``).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from data_prep.document import Document
from data_prep.readers.hf import is_hf_dataset, read_hf
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
PRE_EXTRACTED = frozenset({"wet", "wat", "jsonl", "parquet", "hf"})
"""Formats whose documents already hold plain text (``wat``: no documents at all): no extraction step."""

__all__ = ["READERS", "PRE_EXTRACTED", "Reader", "detect_format", "is_hf_dataset"]


def detect_format(path: Path | str) -> str | None:
    """``auto`` by file name (a URL's path counts, its query does not).

    ``*.warc.wet[.gz]`` -> wet, ``*.warc.wat[.gz]`` -> wat, ``*.warc[.gz]`` -> warc,
    ``*.xml[.bz2|.gz]`` (and ``*.xml-p1p2.bz2`` parts) -> wiki, ``*.jsonl|.ndjson[.gz|.zst]`` -> jsonl,
    ``*.parquet`` -> parquet, a local ``save_to_disk`` directory -> hf.
    """
    text = str(path)
    if "://" in text:
        name = urllib.parse.urlsplit(text).path.rstrip("/").rpartition("/")[2].lower()
    else:
        if is_hf_dataset(Path(text)):
            return "hf"
        name = Path(text).name.lower()
    if name.endswith((".warc.wet", ".warc.wet.gz", ".wet.gz")):
        return "wet"
    if name.endswith((".warc.wat", ".warc.wat.gz", ".wat.gz")):
        return "wat"
    if name.endswith((".warc", ".warc.gz")):
        return "warc"
    if name.endswith((".jsonl", ".jsonl.gz", ".jsonl.zst", ".ndjson", ".ndjson.gz", ".ndjson.zst")):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    if ".xml" in name and name.endswith((".xml", ".bz2", ".gz")):
        return "wiki"
    return None
