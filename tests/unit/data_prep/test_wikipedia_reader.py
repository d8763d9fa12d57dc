"""The Wikipedia reader: articles out; redirects, disambiguation and other namespaces counted; damage
reported."""

from __future__ import annotations

import bz2
from pathlib import Path

from data_prep.readers.wikipedia import read_wikipedia
from data_prep.stats import StageStats

PAGE = """<page><title>{title}</title>{ns}<id>{id}</id><revision><id>9{id}</id>
<timestamp>2020-01-01T00:00:00Z</timestamp><text xml:space="preserve">{text}</text></revision></page>"""


def read(path: Path) -> tuple[list, StageStats]:
    stats = StageStats()
    return list(read_wikipedia(path, stats)), stats


def dump(path: Path, pages: str, schema: str = "0.10", siteinfo: str = "") -> Path:
    path.write_text(
        f'<mediawiki xmlns="http://www.mediawiki.org/xml/export-{schema}/" xml:lang="en">'
        f"{siteinfo}{pages}</mediawiki>",
        encoding="utf-8",
    )
    return path


def test_generated_dump_yields_the_articles(corpus):
    docs, stats = read(corpus.wiki)
    expected = corpus.expected
    assert len(docs) == stats.kept == expected["wiki_articles"]
    assert stats.dropped == {
        "redirect": expected["wiki_redirects"],
        "disambiguation": expected["wiki_disambiguation"],
        "not_article_namespace": expected["wiki_other_namespaces"],
    }
    doc = docs[0]
    assert doc.source == "wiki" and doc.id == f"lmpipewiki:{doc.metadata['page_id']}"
    assert doc.url and "{{Infobox" in doc.text  # the title; raw wikitext until extraction


def test_english_dump_drops_redirects_disambiguation_and_project_pages(shared_fixture):
    docs, stats = read(
        shared_fixture("wiki/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
    )
    assert stats.input == 206 and not stats.errors
    # 100 redirects, one of them the ns-4 page; 8 disambiguation pages ({{disambiguation}}, {{geodis}}).
    assert stats.dropped == {"redirect": 99, "not_article_namespace": 1, "disambiguation": 8}
    assert len(docs) == 98
    assert docs[0].url == "Anarchism" and docs[0].id == "enwiki:12"


def test_utf16_dump_is_decoded(shared_fixture):
    docs, stats = read(shared_fixture("wiki/bgwiki-latest-pages-articles-shortened.xml.bz2"))
    assert [d.url for d in docs] == ["Григориански календар"]
    assert stats.dropped == {"not_article_namespace": 2}
    assert "календар" in docs[0].text and docs[0].id.startswith("bgwiki:")


def test_dump_without_siteinfo_takes_its_name_from_the_language(shared_fixture):
    docs, stats = read(shared_fixture("wiki/enwiki-table-markup.xml.bz2"))
    assert len(docs) == 5 and not stats.errors
    assert docs[0].url == "Constructive vote of no confidence" and docs[0].id == "enwiki:217916"


def test_old_schema_without_ns_uses_the_title_prefix(tmp_path):
    siteinfo = (
        '<siteinfo><dbname>oldwiki</dbname><namespaces><namespace key="0" />'
        '<namespace key="1">Talk</namespace></namespaces></siteinfo>'
    )
    pages = PAGE.format(title="Rome", ns="", id=1, text="Rome is a city.") + PAGE.format(
        title="Talk:Rome", ns="", id=2, text="Discussion."
    )
    docs, stats = read(dump(tmp_path / "old.xml", pages, schema="0.3", siteinfo=siteinfo))
    assert [(d.id, d.url, d.text) for d in docs] == [("oldwiki:1", "Rome", "Rome is a city.")]
    assert stats.dropped == {"not_article_namespace": 1}


def test_malformed_xml_keeps_the_pages_before_and_reports_where(tmp_path):
    good = "".join(PAGE.format(title=f"Page {i}", ns="<ns>0</ns>", id=i, text=f"Text {i}.") for i in range(3))
    path = tmp_path / "broken.xml"
    path.write_text(
        f'<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/">{good}\n<page><title>Bad</titel>'
    )
    bad_line = path.read_text().count("\n") + 1
    docs, stats = read(path)
    assert [d.url for d in docs] == ["Page 0", "Page 1", "Page 2"]
    assert stats.errors["xml_parse"]["count"] == 1
    assert stats.errors["xml_parse"]["examples"][0].startswith(f"{path}:{bad_line}:")
    assert stats.input == 4


def test_truncated_bz2_is_an_error_after_the_pages_read(corpus, tmp_path):
    """Cut inside the second stream of a multistream dump (how Wikipedia ships them)."""
    xml = bz2.decompress(corpus.wiki.read_bytes())
    middle = xml.index(b"<page>", len(xml) // 2)
    second = bz2.compress(xml[middle:])
    cut = tmp_path / "cut.xml.bz2"
    cut.write_bytes(bz2.compress(xml[:middle]) + second[: len(second) // 2])
    docs, stats = read(cut)
    assert stats.errors["truncated_file"]["count"] == 1
    full, _ = read(corpus.wiki)
    assert 0 < len(docs) < len(full)
    assert [d.id for d in docs] == [d.id for d in full[: len(docs)]]


def test_plain_and_bz2_read_the_same(corpus, tmp_path):
    plain = tmp_path / "wiki.xml"
    plain.write_bytes(bz2.decompress(corpus.wiki.read_bytes()))
    assert [d.text for d in read(plain)[0]] == [d.text for d in read(corpus.wiki)[0]]
