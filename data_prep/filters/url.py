"""Drops web pages by their URL: blocklisted domains, ad/tracker domains, banned words in the URL.

Lists are files named in the config, read once when the stage is built; a missing file
fails the run there, in one line, before any document is read. A listed domain blocks
its subdomains too (``example.com`` blocks ``ads.example.com``), as in both list formats.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path
from urllib.parse import urlsplit

from data_prep.config import UrlFilterConfig
from data_prep.document import Document
from data_prep.filters.base import BaseFilter
from pipeline.core.errors import MissingInputError

_ADBLOCK_DOMAIN_RULE = re.compile(r"\|\|([a-z0-9.-]+)\^")
"""``||domain^`` with nothing after it: a whole domain. Paths, wildcards, options and
``@@`` exceptions are for ad blockers inside a browser, not for choosing pages."""
_URL_TOKEN = re.compile(r"[a-z0-9]+")


class UrlFilter(BaseFilter):
    """Drops ``blocked_domain``, ``adblock_domain`` and ``banned_url_word``."""

    name = "url"

    def __init__(self, cfg: UrlFilterConfig) -> None:
        super().__init__()
        self.sources = frozenset(cfg.sources)
        self.blocked = {domain for path in cfg.domain_blocklists for domain in read_domain_list(path)}
        self.adblock = {domain for path in cfg.adblock_lists for domain in read_adblock_domains(path)}
        self.banned_words = read_word_list(cfg.banned_words) if cfg.banned_words else frozenset()

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if doc.source not in self.sources or not doc.url:
            return True
        url = doc.url.lower()
        host = (urlsplit(url).hostname or "").rstrip(".")
        suffixes = _domain_suffixes(host)
        if not self.blocked.isdisjoint(suffixes):
            return False, "blocked_domain"
        if not self.adblock.isdisjoint(suffixes):
            return False, "adblock_domain"
        if self.banned_words and not self.banned_words.isdisjoint(_URL_TOKEN.findall(url)):
            return False, "banned_url_word"
        return True


def _domain_suffixes(host: str) -> list[str]:
    """``a.b.example.com`` -> itself, ``b.example.com``, ``example.com``, ``com``."""
    labels = host.split(".")
    return [".".join(labels[i:]) for i in range(len(labels))]


def _read_lines(path: str) -> list[str]:
    file = Path(path)
    if not file.is_file():
        raise MissingInputError(f"list file not found: {path}")
    data = file.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return data.decode("utf-8", errors="replace").splitlines()


def read_domain_list(path: str) -> set[str]:
    """One domain per line; ``#`` starts a comment, blank lines are skipped."""
    domains = (line.split("#", 1)[0].strip().lower() for line in _read_lines(path))
    return {domain.removeprefix("www.").rstrip(".") for domain in domains if domain}


def read_adblock_domains(path: str) -> set[str]:
    """The domains of an EasyList-style file's ``||domain^`` rules; every other rule is ignored."""
    domains = set()
    for line in _read_lines(path):
        match = _ADBLOCK_DOMAIN_RULE.fullmatch(line.strip().lower())
        if match:
            domains.add(match.group(1).rstrip("."))
    return domains


def read_word_list(path: str) -> frozenset[str]:
    """One word (or phrase) per line, lower-cased; lines starting with ``#`` are switched off."""
    words = (line.strip().lower() for line in _read_lines(path))
    return frozenset(word for word in words if word and not word.startswith("#"))
