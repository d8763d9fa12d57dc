"""Exact deduplication: drop a document whose normalized text was already seen.

Normalizing (lowercase, punctuation and runs of whitespace folded into one space)
lets the same article served in two layouts, or with different spacing and
capitalisation, count as one; anything that differs in its words is left for MinHash.
The set of seen hashes lives in memory for one run of the stage (16 bytes a document).
"""

from __future__ import annotations

import hashlib
import re

from data_prep.document import Document
from data_prep.filters.base import BaseFilter

_NON_WORD = re.compile(r"[\W_]+")


def normalized_text_hash(text: str) -> bytes:
    normalized = _NON_WORD.sub(" ", text.lower()).strip()
    return hashlib.blake2b(normalized.encode(), digest_size=16).digest()


class ExactDedupFilter(BaseFilter):
    """Drops ``duplicate``: the first document with a given normalized text wins."""

    name = "dedup"

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[bytes] = set()

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        digest = normalized_text_hash(doc.text)
        if digest in self._seen:
            return False, "duplicate"
        self._seen.add(digest)
        return True
