"""Crafted documents that pin where lmpipe's filters follow the papers (issue 17): each test fails on the
old behaviour (word-character denominators, page-wide C4 checks, initials as sentence ends, symbol-only
texts clustered, alt text kept, dedup stage at 0 s)."""

from __future__ import annotations

import numpy as np

from data_prep.config import (
    C4FilterConfig,
    DedupConfig,
    FineWebQualityFilterConfig,
    MinHashConfig,
    RepetitionFilterConfig,
)
from data_prep.dedup.keys import TaskKeys
from data_prep.dedup.minhash import band_hashes, minhash_signatures, near_duplicate_labels
from data_prep.dedup.removal import plan_removals
from data_prep.document import Document
from data_prep.extract.html import html_to_text
from data_prep.filters import C4Filter, FineWebQualityFilter, RepetitionFilter
from data_prep.filters.ngrams import split_words
from data_prep.writers.parquet import ParquetWriter

ARTICLE = [
    "The town lies on the banks of a wide river and has an old stone bridge.",
    "Most of its houses were built from local stone more than two hundred years ago.",
    "Every summer the people of the town hold a festival with music and food.",
    "A railway line connects it with the larger cities in the south of the country.",
]


def kept(step, *docs: Document) -> list[str]:
    return [doc.id for doc in step.run(docs)]


def test_repetition_fractions_are_over_the_documents_characters():
    """A top 2-gram holding 21.4% of the word characters but 16.9% of all characters (spaces and
    punctuation count, as in Gopher's "fraction of characters") passes the 0.20 threshold."""
    filler = " ".join(f"w{i:03d}x" for i in range(70))
    text = f"{filler} " + " ".join(["ab cd."] * 30)
    word_chars = int(split_words([text]).chars_before[-1])
    top_chars = 4 * 30
    assert top_chars / word_chars > 0.20 > top_chars / len(text)
    cfg = RepetitionFilterConfig(top_ngram_fractions=[0.20, 1.0, 1.0], duplicate_ngram_fractions=[1.0] * 6)
    assert kept(RepetitionFilter(cfg), Document("d", text, "cc")) == ["d"]


def test_repetition_keeps_hyphenated_and_dotted_words_whole():
    words = split_words(["A state-of-the-art v1.2.3 build, (really)!"])
    lengths = np.diff(words.chars_before).tolist()
    assert lengths == [len("A"), len("state-of-the-art"), len("v1.2.3"), len("build"), len("really")]


def test_repetition_does_not_count_a_top_ngram_seen_once():
    short = "Tiny page here."
    assert kept(RepetitionFilter(RepetitionFilterConfig()), Document("d", short, "cc")) == ["d"]


def test_c4_curly_bracket_in_a_removed_line_does_not_drop_the_page():
    menu_code = "\n".join(ARTICLE + ["var x = {a: 1}", "lorem ipsum"])  # no end mark: removed lines
    step = C4Filter(C4FilterConfig())
    doc = Document("d", menu_code, "cc")
    assert kept(step, doc) == ["d"]
    assert doc.text == "\n".join(ARTICLE)
    kept_code = "\n".join(ARTICLE + ["Call it as f(x) { return x; } and it gives back the value."])
    assert kept(C4Filter(C4FilterConfig()), Document("c", kept_code, "cc")) == []


def test_c4_removes_citation_markers_before_judging_a_line():
    text = "\n".join(ARTICLE[:2] + ["It was founded in the year 1200 by monks.[1]", "History [edit]"])
    doc = Document("d", text, "cc")
    assert kept(C4Filter(C4FilterConfig()), doc) == ["d"]
    assert doc.text.splitlines()[-1] == "It was founded in the year 1200 by monks."


def test_c4_initials_do_not_end_a_sentence():
    """Two real sentences and an initial: C4 (3 sentences) drops the page; "G. Allen" is one name."""
    text = "\n".join(
        ["The bridge was designed by G. Allen and built in two years.", "It still carries traffic today."]
    )
    step = C4Filter(C4FilterConfig())
    assert kept(step, Document("d", text, "cc")) == []
    assert step.stats.dropped == {"too_few_sentences": 1}


def test_fineweb_drops_lists_and_keeps_prose():
    step = FineWebQualityFilter(FineWebQualityFilterConfig(enabled=True))
    listing = "\n".join(f"Item {i}" for i in range(40))
    assert kept(step, Document("prose", "\n".join(ARTICLE), "cc"), Document("list", listing, "cc")) == [
        "prose"
    ]
    assert step.stats.dropped == {"line_punct_ratio": 1}


def test_symbol_only_texts_are_not_near_duplicates():
    cfg = MinHashConfig()
    texts = ["😀😀😀", "### *** ###", "→ ← ↑", "!!!"]
    bands = band_hashes(minhash_signatures(texts, cfg), cfg)
    assert (near_duplicate_labels([bands], cfg.num_bands) == np.arange(len(texts))).all()


def test_extraction_drops_image_alt_text():
    html = (
        "<html><body><article><p>The town lies on the banks of a wide river.</p>"
        '<img src="p.jpg" alt="prof_pic.jpg"></article></body></html>'
    )
    text = html_to_text(html)
    assert "river" in text and "prof_pic" not in text


def test_symbol_only_texts_are_not_exact_duplicates_and_no_cluster_is_reported_for_exact_copies(tmp_path):
    """Symbol-only texts fold to "" but differ; two exact copies are one ``duplicate``, not also a
    near-duplicate cluster (the summary printed "near_duplicate 0 (1 near-duplicate clusters)")."""
    prose = " ".join(ARTICLE)
    docs = [Document(str(i), text, "cc") for i, text in enumerate(["😀😀", "###", prose, prose])]
    cfg = DedupConfig(url=False)
    keys = TaskKeys(cfg)
    ParquetWriter(tmp_path / "filtered", "t", docs_per_shard=10, on_rows=keys.add).write(docs)
    assert keys.save(tmp_path / "keys", "t") == 4
    summary = plan_removals(tmp_path, tmp_path / "keys", ["t"], [4], cfg)
    assert summary["removed"] == {"duplicate": 1, "duplicate_url": 0, "near_duplicate": 0}
    assert summary["clusters"] == 0
