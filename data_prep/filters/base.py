"""The base of every per-document stage: subclasses decide, the base keeps the books.

As in datatrove, a subclass implements only ``filter(doc)``; ``run`` counts what came
in, what was kept, what was dropped and why (``dropped[<reason>]``), the documents a
stage could not process (``errors``), and the time spent deciding. Extractors and
dedup are filters too: an extractor rewrites ``doc.text`` and drops what comes out
empty, so every stage reads and reports the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from time import perf_counter
from typing import ClassVar

from data_prep.document import Document
from data_prep.stats import StageStats, utf8_length


class BaseFilter:
    name: ClassVar[str]
    """The stage's key in stats.json."""
    document_errors: ClassVar[tuple[type[Exception], ...]] = ()
    """Exceptions that mean "this document is broken": counted as errors and skipped.
    Anything else is a bug and propagates."""

    def __init__(self) -> None:
        self.stats = StageStats()

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        """True to keep; False or ``(False, reason)`` to drop."""
        raise NotImplementedError

    def run(self, docs: Iterable[Document]) -> Iterator[Document]:
        stats = self.stats
        for doc in docs:
            stats.input += 1
            start = perf_counter()
            try:
                verdict = self.filter(doc)
            except self.document_errors as exc:
                stats.error(type(exc).__name__, f"{doc.url or doc.id}: {str(exc)[:120]}")
                continue
            finally:
                stats.seconds += perf_counter() - start
            keep, reason = verdict if isinstance(verdict, tuple) else (verdict, "filtered")
            if keep:
                stats.keep(utf8_length(doc.text))
                yield doc
            else:
                stats.drop(reason)
