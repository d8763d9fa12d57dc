"""Redacts e-mail addresses and IPv4 addresses; a transform that never drops a document.

Redactions are counted in the stage's ``counts`` (``emails``, ``ips``). An IPv4 address
is four dotted numbers of at most 255 with no word character or further dotted number
on either side, so versions (``1.2.3``, ``v1.2.3.4``), longer dotted runs (``1.2.3.4.5``)
and out-of-range numbers (``999.1.1.1``) stay as they are.
"""

from __future__ import annotations

import re

from data_prep.config import PiiConfig
from data_prep.document import Document
from data_prep.filters.base import BaseFilter

EMAIL = re.compile(
    r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"
)
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
IPV4 = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?!\.?\w)")
MAYBE_IPV4 = re.compile(r"\.\d{1,3}\.\d")
"""Every dotted quad contains this. Starting with a literal, it is found by a fast scan for ".";
IPV4's lookarounds (or a leading digit class) make the scan try a match at every position."""
_LOCAL_PART_CHARS = frozenset("_.+-")


class PiiRedactor(BaseFilter):
    name = "pii"

    def __init__(self, cfg: PiiConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def filter(self, doc: Document) -> bool:
        text = doc.text
        if "@" in text:
            text, emails = redact_emails(text, self.cfg.email_replacement)
            if emails:
                self.stats.count("emails", emails)
        if MAYBE_IPV4.search(text):
            text, ips = IPV4.subn(self.cfg.ip_replacement, text)
            if ips:
                self.stats.count("ips", ips)
        doc.text = text
        return True


def redact_emails(text: str, replacement: str) -> tuple[str, int]:
    """``EMAIL.subn(replacement, text)``, but trying the pattern only where an address can start.

    The pattern's lookbehind makes a scan try it at every position. Every address holds one "@",
    and starts where the run of local-part characters before that "@" starts, so only those
    starts are tried (the lookbehind still sees the text before them)."""
    pieces: list[str] = []
    end, count = 0, 0
    at = text.find("@")
    while at != -1:
        start = at
        while start > end and (text[start - 1].isalnum() or text[start - 1] in _LOCAL_PART_CHARS):
            start -= 1
        match = EMAIL.match(text, start) if start < at else None
        if match:
            pieces += (text[end:start], replacement)
            end, count = match.end(), count + 1
        at = text.find("@", at + 1)
    return ("".join(pieces) + text[end:] if count else text), count
