"""Common Crawl WAT files (``.warc.wat.gz``) hold JSON metadata about captures, not documents.

They are recognised so that a listing or directory that includes them does not fail,
and skipped without being read (a remote WAT is not downloaded): each file counts as
one ``input`` ``dropped`` ``not_documents``, and yields nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from data_prep.document import Document
from data_prep.stats import StageStats


def read_wat(path: Any, stats: StageStats) -> Iterator[Document]:
    stats.input += 1
    stats.drop("not_documents")
    return
    yield  # a generator, like every reader
