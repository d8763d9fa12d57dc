"""Readers turn one input file into a stream of raw documents, counting what they skip.

Every reader is ``read(path, stats) -> Iterator[Document]``: a generator that holds one
record at a time, so a file of any size reads in constant memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

from data_prep.document import Document
from data_prep.readers.warc import read_warc
from data_prep.readers.wikipedia import read_wikipedia
from data_prep.stats import StageStats

Reader = Callable[[Path, StageStats], Iterator[Document]]
READERS: dict[str, Reader] = {"warc": read_warc, "wiki": read_wikipedia}


def detect_format(path: Path) -> str | None:
    """``auto`` by file name: ``*.warc[.gz]`` -> warc, ``*.xml[.bz2|.gz]`` (and ``*.xml-p1p2.bz2`` parts) -> wiki."""
    name = path.name.lower()
    if name.endswith((".warc", ".warc.gz")):
        return "warc"
    if ".xml" in name and name.endswith((".xml", ".bz2", ".gz")):
        return "wiki"
    return None
