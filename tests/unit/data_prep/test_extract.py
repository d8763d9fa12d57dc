"""Extraction keeps what a reader reads and drops the machinery around it."""

from __future__ import annotations

from data_prep.config import ExtractConfig
from data_prep.document import Document
from data_prep.extract import HtmlExtractor, WikitextExtractor, html_to_text, wikitext_to_text

ARTICLE = """{{Infobox settlement
| name = Varnholt
| population = 12,000
}}
'''Varnholt''' is a town in [[Oster Vale|the Oster valley]].\
<ref>{{cite web |url=https://example.org |title=Atlas}}</ref> \
It lies on the [[Varn River]].<ref name="a"/>
[[File:Varnholt bridge.jpg|thumb|The old bridge, 1890]]

== History ==
The town was founded in 1204 by ''monks'' from [[Lorn]].<!-- check this date -->

=== Early years ===
{{Main|History of Varnholt}}
* A market was held from 1250.
* A [https://example.org bridge] was built in 1310.

== Population ==
{| class="wikitable"
! Year !! Population
|-
| 1900 || 4,000
|}

== References ==
{{Reflist}}

[[Category:Towns in the Oster Vale]]
[[de:Varnholt]]
"""


def test_wikitext_keeps_headings_and_prose():
    text = wikitext_to_text(ARTICLE)
    lines = text.splitlines()
    assert lines[0] == "Varnholt is a town in the Oster valley. It lies on the Varn River."
    assert "History" in lines and "Early years" in lines
    assert "The town was founded in 1204 by monks from Lorn." in lines
    assert "A market was held from 1250." in lines and "A bridge was built in 1310." in lines


def test_wikitext_drops_templates_refs_tables_files_categories():
    text = wikitext_to_text(ARTICLE)
    for gone in (
        "Infobox",
        "12,000",
        "cite",
        "Atlas",
        "{{",
        "}}",
        "<ref",
        "check this date",
        "thumb",
        "The old bridge",
        "wikitable",
        "4,000",
        "Category",
        "Towns in the Oster Vale",
        "de:",
        "[[",
        "]]",
        "History of Varnholt",
    ):
        assert gone not in text, gone


def test_wikitext_drops_headings_of_sections_left_empty():
    lines = wikitext_to_text(ARTICLE).splitlines()
    assert "References" not in lines  # only {{Reflist}} below it
    assert "Population" not in lines  # only a table below it
    assert "History" in lines  # its text, and a subsection with text


def test_html_main_text_without_boilerplate():
    html = """<html><head><title>T</title><script>var tracking = 1;</script></head><body>
    <div class="cookie-banner">We use cookies to improve your experience.</div>
    <nav><ul><li><a href="/">Home</a></li><li><a href="/about">About us</a></li></ul></nav>
    <article><h1>Varnholt</h1><p>Varnholt is a town on the Varn River. It was founded in 1204.</p></article>
    <footer>Copyright 2024. All rights reserved.</footer></body></html>"""
    text = html_to_text(html)
    assert "Varnholt is a town on the Varn River. It was founded in 1204." in text
    for gone in ("cookies", "About us", "All rights reserved", "tracking"):
        assert gone not in text


def test_extractors_rewrite_text_and_drop_empty_results():
    html = HtmlExtractor()
    pages = [
        Document("a", "<html><body><p>Some words here.</p></body></html>", "cc"),
        Document("b", "<html><body><nav><a href='/'>Home</a></nav></body></html>", "cc"),
    ]
    assert [d.text for d in html.run(pages)] == ["Some words here."]
    assert html.stats.dropped == {"empty_text": 1} and html.stats.kept == 1
    wiki = WikitextExtractor()
    kept = list(
        wiki.run([Document("c", "{{stub}}[[Category:X]]", "wiki"), Document("d", "'''Hi''' there.", "wiki")])
    )
    assert [d.text for d in kept] == ["Hi there."] and wiki.stats.dropped == {"empty_text": 1}


FACT_ITEMS = "".join(
    f"<li>Fact {i}: the <a href='/r{i}'>Varn river</a> floods the meadows every spring.</li>"
    for i in range(8)
)
LIST_PAGE = (
    "<html><body><nav><a href='/'>Home</a> <a href='/about'>About us</a></nav>"
    f"<div><h1>Facts</h1><p>Some facts about the valley:</p><ul>{FACT_ITEMS}</ul></div>"
    "<footer>Copyright 2024. All rights reserved.</footer></body></html>"
)


def test_a_list_page_keeps_its_items_and_drops_its_furniture():
    """resiliparse's main-content rules drop a <ul> near the top of the body or with over 20% link
    text: a page of facts kept its title alone (60 of 1,024 characters on the fixtures)."""
    assert html_to_text(LIST_PAGE, min_main_chars=0) == "Facts\n\nSome facts about the valley:"
    text = html_to_text(LIST_PAGE)
    assert all(f"Fact {i}: the Varn river floods the meadows every spring." in text for i in range(8))
    for gone in ("Home", "About us", "Copyright"):
        assert gone not in text


def test_a_job_table_built_of_lists_keeps_its_rows():
    rows = "".join(
        f"<ul class='row'><li><a href='/job/{i}'>Welder</a></li><li><a href='/co/{i}'>Varn Steel Works</a>"
        f"</li><li>Varnholt</li><li>2020-08-0{i}</li></ul>"
        for i in range(1, 9)
    )
    html = f"<html><body><div id='main'><h1>Jobs in Varnholt</h1>{rows}</div></body></html>"
    assert "Welder" not in html_to_text(html, min_main_chars=0)
    text = html_to_text(html)
    assert text.count("Welder") == 8 and "2020-08-08" in text


def test_the_list_page_fallback_follows_the_config():
    off = HtmlExtractor(ExtractConfig(min_main_chars=0))
    on = HtmlExtractor(ExtractConfig())
    assert [d.text for d in off.run([Document("a", LIST_PAGE, "cc")])] == [
        "Facts\n\nSome facts about the valley:"
    ]
    assert "Fact 7" in next(iter(on.run([Document("a", LIST_PAGE, "cc")]))).text
