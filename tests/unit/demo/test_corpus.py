"""The generated corpus is real WARC / MediaWiki / JSONL, deterministic, and plants what prep must remove."""

from __future__ import annotations

import bz2
import json
import re
import xml.etree.ElementTree as ET
from collections import Counter

from fastwarc.warc import ArchiveIterator, WarcRecordType

from pipeline.demo.corpus import generate_corpus

EXPORT_NS = "{http://www.mediawiki.org/xml/export-0.10/}"


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    first = generate_corpus(tmp_path / "a", seed=3, n_entities=30)
    again = generate_corpus(tmp_path / "b", seed=3, n_entities=30)
    other = generate_corpus(tmp_path / "c", seed=4, n_entities=30)
    for name in ("warc", "wiki", "sft"):
        assert getattr(first, name).read_bytes() == getattr(again, name).read_bytes()
        assert getattr(first, name).read_bytes() != getattr(other, name).read_bytes()
    assert first.expected == again.expected


def test_warc_is_read_by_fastwarc_with_valid_digests(corpus):
    kinds = Counter()
    with open(corpus.warc, "rb") as f:
        for record in ArchiveIterator(f, parse_http=False):
            kinds[str(record.record_type)] += 1
            assert record.verify_block_digest(), record.headers.get("WARC-Target-URI")
    assert kinds[str(WarcRecordType.warcinfo)] == 1
    assert kinds[str(WarcRecordType.request)] > 0
    assert kinds[str(WarcRecordType.response)] == corpus.expected["web_responses"]


def test_planted_pages_are_there(corpus):
    expected = corpus.expected
    assert expected["web_responses"] == (
        expected["web_articles"]
        + 2 * expected["exact_duplicates"]
        + expected["non_english"]
        + expected["junk"]
        + expected["non_html"]
    )
    assert min(expected["exact_duplicates"], expected["non_english"], expected["junk"]) > 0


def test_wiki_dump_is_a_mediawiki_export(corpus):
    with bz2.open(corpus.wiki) as f:
        root = ET.parse(f).getroot()
    assert root.tag == f"{EXPORT_NS}mediawiki"
    assert root.find(f"{EXPORT_NS}siteinfo/{EXPORT_NS}namespaces") is not None
    pages = root.findall(f"{EXPORT_NS}page")
    assert len(pages) == corpus.expected["wiki_pages"]
    namespaces = Counter(page.findtext(f"{EXPORT_NS}ns") for page in pages)
    assert namespaces["0"] == corpus.expected["wiki_pages"] - corpus.expected["wiki_other_namespaces"]
    redirects = [p for p in pages if p.find(f"{EXPORT_NS}redirect") is not None]
    assert len(redirects) == corpus.expected["wiki_redirects"]
    article = next(
        p.findtext(f"{EXPORT_NS}revision/{EXPORT_NS}text")
        for p in pages
        if p.findtext(f"{EXPORT_NS}ns") == "0" and p.find(f"{EXPORT_NS}redirect") is None
    )
    for markup in ("{{Infobox", "[[", "<ref>", "== ", "[[Category:"):
        assert markup in article


def test_sft_pairs_answer_about_the_entity_they_ask_about(corpus):
    records = [json.loads(line) for line in corpus.sft.read_text().splitlines()]
    assert len(records) == corpus.expected["sft_records"]
    questions = ("How many people live in ", "What is the population of ")
    population = [r for r in records if r["prompt"].startswith(questions)]
    assert population
    for record in population:
        town = record["prompt"].removeprefix(questions[0]).removeprefix(questions[1]).removesuffix("?")
        assert re.fullmatch(rf"About [\d,]+ people live in {re.escape(town)}\.", record["response"])
