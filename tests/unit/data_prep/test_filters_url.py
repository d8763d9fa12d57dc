"""URL lists and bad words: list files are read once, missing ones fail at build time in one line."""

from __future__ import annotations

import gzip

import pytest

from data_prep.config import BadWordsFilterConfig, PrepConfig, UrlFilterConfig
from data_prep.document import Document
from data_prep.filters import BadWordsFilter, UrlFilter
from data_prep.filters.url import read_adblock_domains
from data_prep.prep import build_steps

PROSE = "The town lies on the banks of a wide river, and its old houses were built from local stone."


def kept_urls(step: UrlFilter, *urls: str, source: str = "cc") -> list[str]:
    return [d.url for d in step.run(Document(str(i), "text", source, url) for i, url in enumerate(urls))]


def test_domain_blocklist_blocks_domains_and_their_subdomains(tmp_path):
    listing = tmp_path / "domains.txt"
    listing.write_text("# spam farms\nspam.example  # seen in 2024\n\nwww.Casino.example\n")
    step = UrlFilter(UrlFilterConfig(domain_blocklists=[str(listing)]))
    urls = [
        "https://spam.example/a",
        "http://www.spam.example/b",
        "https://casino.example:8080/",
        "https://notspam.example/",
        "https://example.org/spam.example",
        "",
    ]
    assert kept_urls(step, *urls) == urls[3:]
    assert step.stats.dropped == {"blocked_domain": 3}


def test_adblock_rules_only_whole_domain_ones_count(tmp_path):
    rules = tmp_path / "list.txt.gz"
    rules.write_bytes(
        gzip.compress(
            b"[Adblock Plus 2.0]\n! comment\n||ads.example^\n||pop.example^$popup\n"
            b"||cdn.example/banner/*\n@@||good.example^\n##.ad-box\n-ad-300x600-\n"
        )
    )
    assert read_adblock_domains(str(rules)) == {"ads.example"}


def test_easylist_fixture_blocks_a_listed_domain_and_keeps_others(shared_fixture):
    easylist = shared_fixture("blocklists/easylist.txt.gz")
    domains = read_adblock_domains(str(easylist))
    assert "01counter.com" in domains and "doubleclick.net" in domains and len(domains) > 10_000
    step = UrlFilter(UrlFilterConfig(adblock_lists=[str(easylist)]))
    urls = [
        "https://01counter.com/c.js",
        "https://ad.doubleclick.net/x",
        "https://en.wikipedia.org/wiki/River",
    ]
    assert kept_urls(step, *urls) == urls[2:]
    assert step.stats.dropped == {"adblock_domain": 2}


def test_banned_words_in_url_tokens(shared_fixture):
    words = shared_fixture("blocklists/banned_words.txt")
    step = UrlFilter(UrlFilterConfig(banned_words=str(words)))
    urls = [
        "https://example.com/free-BDSM-videos",
        "https://example.com/class/ass/",  # '#ass' is switched off
        "https://example.com/abdsmith",
    ]  # a whole token must match, not a substring
    assert kept_urls(step, *urls) == urls[1:]
    assert step.stats.dropped == {"banned_url_word": 1}


def test_url_filter_only_touches_its_sources(tmp_path):
    listing = tmp_path / "domains.txt"
    listing.write_text("spam.example\n")
    step = UrlFilter(UrlFilterConfig(domain_blocklists=[str(listing)]))
    assert kept_urls(step, "https://spam.example/", source="wiki") == ["https://spam.example/"]


def test_bad_words_fraction(tmp_path):
    listing = tmp_path / "bad.txt"
    listing.write_text("#off\nbadword\nvery bad phrase\n")
    text_with_one = PROSE + " badword"  # 1 of 20 words
    phrase = PROSE + " a very bad phrase"  # 3 of 22 words
    strict = BadWordsFilter(BadWordsFilterConfig(enabled=True, path=str(listing)))
    assert [
        d.id
        for d in strict.run(
            [
                Document("clean", PROSE + " off", "cc"),
                Document("one", text_with_one, "cc"),
                Document("phrase", phrase, "cc"),
            ]
        )
    ] == ["clean"]
    assert strict.stats.dropped == {"bad_words": 2}
    loose = BadWordsFilter(BadWordsFilterConfig(enabled=True, path=str(listing), max_fraction=0.1))
    assert [
        d.id for d in loose.run([Document("one", text_with_one, "cc"), Document("phrase", phrase, "cc")])
    ] == ["one"]


def test_missing_list_file_fails_at_build_in_one_line(tmp_path):
    cfg = PrepConfig(input=["x.warc.gz"], output=str(tmp_path))
    cfg.url.adblock_lists = [str(tmp_path / "nope.txt")]
    with pytest.raises(FileNotFoundError, match=r"^list file not found: .*nope\.txt$"):
        build_steps(cfg, "warc")
    cfg = PrepConfig(input=["x.warc.gz"], output=str(tmp_path))
    cfg.badwords.enabled, cfg.badwords.path = True, str(tmp_path / "bad.txt")
    with pytest.raises(FileNotFoundError, match="bad.txt"):
        build_steps(cfg, "warc")


def test_build_steps_order_and_defaults(tmp_path):
    names = lambda cfg: [step.name for step in build_steps(cfg, "warc")]
    # The default is Gopher + C4 in FineWeb's order; dedup is a later stage.
    assert names(PrepConfig()) == ["extract", "language", "repetition", "quality", "c4", "pii"]
    listing = tmp_path / "bad.txt"
    listing.write_text("badword\n")
    cfg = PrepConfig()
    cfg.url.domain_blocklists = [str(listing)]
    cfg.c4.enabled = cfg.repetition.enabled = cfg.badwords.enabled = True
    cfg.badwords.path = str(listing)
    cfg.fineweb.enabled = True
    assert names(cfg) == [
        "extract",
        "url",
        "language",
        "repetition",
        "quality",
        "c4",
        "fineweb",
        "badwords",
        "pii",
    ]
    cfg.pii.enabled = cfg.quality.enabled = cfg.language.enabled = cfg.fineweb.enabled = False
    assert names(cfg) == ["extract", "url", "repetition", "c4", "badwords"]
