"""``extract.html: trafilatura``: the optional extractor keeps the article and drops the page's machinery."""

from __future__ import annotations

import sys

import pyarrow.parquet as pq
import pytest

from data_prep.config import ExtractConfig, PrepConfig
from data_prep.document import Document
from data_prep.extract import HtmlExtractor
from pipeline.core.errors import ConfigError
from pipeline.testing import require_module

PARAGRAPHS = [
    "Varnholt is a market town on the Varn River, in the north of the Oster valley. The old town sits on a "
    "low hill above the river crossing, and its streets still follow the line of the medieval walls.",
    "The town was founded in 1204 by monks from Lorn, who built a mill and a small chapel beside the ford. "
    "A weekly market was held from 1250, and the stone bridge that gives the town its coat of arms "
    "followed in 1310.",
    "Today about twelve thousand people live in Varnholt. Most of them work in the timber trade, in the "
    "hospital on the eastern bank, or in the shops and workshops of the old town.",
]
BOILERPLATE = [
    "Accept all cookies",
    "Subscribe to our newsletter",
    "About us",
    "Contact the editors",
    "All rights reserved",
    "Trending now",
    "var tracking",
]
PAGE = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Varnholt - Oster Valley Guide</title>
<script>var tracking = {{"id": 1}};</script><style>body {{ font-family: serif; }}</style></head>
<body>
<div id="cookie-banner" class="cookie-consent">We use cookies. <button>Accept all cookies</button></div>
<header class="site-header"><a href="/" class="logo">Oster Valley Guide</a>
<nav class="main-nav"><ul><li><a href="/">Home</a></li><li><a href="/towns">Towns</a></li>
<li><a href="/about">About us</a></li><li><a href="/contact">Contact the editors</a></li></ul></nav></header>
<main><article class="post">
<h1>Varnholt</h1>
<p class="byline">By Anna Weber</p>
{"".join(f"<p>{p}</p>" for p in PARAGRAPHS)}
</article>
<aside class="sidebar"><h3>Trending now</h3><ul><li><a href="/lorn">Lorn in winter</a></li>
<li><a href="/bridges">Ten bridges to see</a></li></ul></aside></main>
<footer class="site-footer"><div class="newsletter">Subscribe to our newsletter</div>
<p>Copyright 2024 Oster Valley Guide. All rights reserved.</p></footer>
</body></html>"""


def extractor() -> HtmlExtractor:
    require_module("trafilatura")
    return HtmlExtractor(ExtractConfig(html="trafilatura"))


def test_article_is_kept_and_boilerplate_dropped():
    step = extractor()
    [doc] = step.run([Document("a", PAGE, "cc", "https://guide.example/varnholt")])
    for paragraph in PARAGRAPHS:
        assert paragraph in doc.text
    for gone in BOILERPLATE:
        assert gone not in doc.text, gone
    assert step.stats.kept == 1 and step.stats.errors == {}


def test_junk_is_dropped_as_empty_text_not_an_error():
    step = extractor()
    junk = ["", "<<<>>>\x00"]
    assert list(step.run([Document(str(i), text, "cc") for i, text in enumerate(junk)])) == []
    assert step.stats.dropped == {"empty_text": len(junk)} and step.stats.errors == {}
    list(step.run([Document("s", "\ud800 not html", "cc")]))  # a lone surrogate: no exception
    assert step.stats.errors == {}


def test_fallback_passes_are_on_as_in_datatrove():
    """Without ``fast``, trafilatura's fallback extractors run, as in datatrove and FineWeb: a page of
    navigation alone keeps its one word (the word-count rules drop it later) instead of coming out empty."""
    nav_only = "<html><body><nav><a href='/'>Home</a></nav></body></html>"
    assert [doc.text for doc in extractor().run([Document("n", nav_only, "cc")])] == ["Home"]


def test_the_same_page_twice_gives_the_same_text():
    """trafilatura's own deduplication cache is off: a page's text does not depend on the pages before it."""
    first, second = extractor().run([Document("a", PAGE, "cc"), Document("b", PAGE, "cc")])
    assert first.text == second.text != ""


def test_prep_runs_end_to_end_with_trafilatura(corpus, tmp_path):
    require_module("trafilatura")
    from data_prep.prep import run_prep

    cfg = PrepConfig(
        input=[str(corpus.warc)], output=str(tmp_path / "out"), extract=ExtractConfig(html="trafilatura")
    )
    stats = run_prep(cfg)
    rows = pq.read_table(list((tmp_path / "out" / "docs").glob("*.parquet"))).to_pylist()
    assert rows and all(row["text"].strip() and "</p>" not in row["text"] for row in rows)
    extract = stats["stages"]["extract"]
    assert extract["kept"] > extract["input"] / 2 and extract["errors"] == {}
    assert PrepConfig.load(tmp_path / "out" / "config.yaml").extract.html == "trafilatura"


def test_missing_trafilatura_fails_at_construction_in_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "trafilatura", None)  # import trafilatura -> ImportError
    with pytest.raises(ConfigError, match=r"pip install 'lmpipe\[extras\]'") as failure:
        HtmlExtractor(ExtractConfig(html="trafilatura"))
    assert "\n" not in str(failure.value)
    HtmlExtractor()  # the default needs nothing optional
