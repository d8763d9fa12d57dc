"""Gopher quality and repetition rules: prose passes, each kind of junk is dropped for its own reason."""

from __future__ import annotations

import random
import time

from data_prep.config import QualityFilterConfig, RepetitionFilterConfig
from data_prep.document import Document
from data_prep.filters import BaseFilter, QualityFilter, RepetitionFilter
from data_prep.filters.ngrams import ngram_chars
from data_prep.filters.repetition import duplicate_shares

PROSE = (
    "Varnholt is a small market town in the north of the region. The town lies on the banks of a wide river, "
    "and most of its old houses were built from local stone more than two hundred years ago. Every summer "
    "the people of the town hold a festival with music, food and a boat race. A railway line connects it "
    "with the rest of the region, and buses run every hour to the larger cities in the south."
)
WORDS = PROSE.split()


def verdicts(step: BaseFilter, *texts: str) -> list[bool]:
    kept = {d.id for d in step.run(Document(str(i), t, "cc") for i, t in enumerate(texts))}
    return [str(i) in kept for i in range(len(texts))]


def test_quality_new_rules_drop_with_their_reason():
    step = QualityFilter(QualityFilterConfig(min_stop_words=2))
    hashtags = " ".join(f"{w} #tag" if i % 5 == 0 else w for i, w in enumerate(WORDS))  # 0.2 '#' per word
    teaser = " ".join(f"{w}..." if i % 6 == 0 else w for i, w in enumerate(WORDS))  # 0.17 ellipses per word
    bullets = "\n".join(f"• {' '.join(WORDS[i : i + 8])}" for i in range(0, len(WORDS), 8))
    truncated = "\n".join(
        " ".join(WORDS[i : i + 6]) + ("…" if i % 12 == 0 else ".") for i in range(0, len(WORDS), 6)
    )
    keywords = " ".join(
        random.Random(0).choices(["cheap", "flights", "hotel", "deals", "London", "Paris"], k=60)
    )
    assert verdicts(step, PROSE, hashtags, teaser, bullets, truncated, keywords) == [True] + [False] * 5
    assert step.stats.dropped == {
        "symbol_word_ratio": 2,
        "bullet_lines": 1,
        "ellipsis_lines": 1,
        "too_few_stop_words": 1,
    }


def test_quality_some_bullets_and_one_hashtag_are_fine():
    step = QualityFilter(QualityFilterConfig(min_stop_words=2))
    listing = "\n".join([PROSE, "- the first item of a short list", "- the second item", "#history"])
    assert verdicts(step, listing) == [True]


def test_stop_word_rule_is_gophers_by_default_and_counts_distinct_words():
    only_the = " ".join(["the town"] * 30)
    assert verdicts(QualityFilter(QualityFilterConfig()), only_the) == [False]
    assert verdicts(QualityFilter(QualityFilterConfig(min_stop_words=0)), only_the) == [True]
    assert verdicts(QualityFilter(QualityFilterConfig()), only_the + " of the river") == [True]


def test_repetition_keeps_prose_and_drops_each_kind_of_repetition():
    step = RepetitionFilter(RepetitionFilterConfig(enabled=True))
    menu = "\n".join([PROSE] + ["Home", "News", "Contact", "Home", "News", "Contact", "Home", "News"])
    paragraphs = "\n\n".join(
        [PROSE, "Subscribe to our newsletter today.", "Subscribe to our newsletter today."]
    )
    stuffing = PROSE + " " + " ".join(["cheap flights"] * 20)
    loop = PROSE + " " + " ".join(WORDS[:12] * 3)
    assert verdicts(step, PROSE, menu, paragraphs, stuffing, loop) == [True, False, False, False, False]
    assert step.stats.dropped == {
        "duplicate_lines": 1,
        "duplicate_paragraphs": 1,
        "top_2_gram": 1,
        "duplicate_5_grams": 1,
    }


def test_repetition_char_fractions_catch_few_but_long_repeats():
    step = RepetitionFilter(RepetitionFilterConfig(enabled=True))
    long_line = " ".join(WORDS[:30])
    lines = "\n".join(
        [long_line, "a", "b", "c", "d", "e", "f", "g", "h", long_line]
    )  # 1 of 10 lines, ~45% of chars
    assert verdicts(step, lines) == [False]
    assert step.stats.dropped == {"duplicate_line_chars": 1}


def test_repetition_helpers_count_overlaps_once():
    assert duplicate_shares(["a", "bb", "a", "a"], 10) == (0.5, 2 / 10)  # over the document's characters
    counted = ngram_chars(["a b c d e a b c d e a b c d e f", "a b c d e f", "x y x y x y", "a b c"])
    assert counted.duplicate[0, 0] == 15  # 5-grams: every word but "f", each counted once
    assert counted.duplicate[0, 5] == 15  # 10-grams: "a..e a..e" occurs twice, overlapping
    assert counted.duplicate[1].tolist() == [0] * 6  # nothing repeats
    assert counted.top[2, 0] == 6  # ("x", "y") three times
    assert counted.top[3].tolist() == [0, 0, 0]  # nothing repeats


def test_repetition_is_linear_in_document_length():
    """A 200k-word document of one repeated sentence is dropped quickly (no quadratic pass)."""
    step = RepetitionFilter(
        RepetitionFilterConfig(
            enabled=True,
            max_duplicate_line_fraction=1.0,
            max_duplicate_line_char_fraction=1.0,
            max_duplicate_paragraph_fraction=1.0,
            max_duplicate_paragraph_char_fraction=1.0,
            top_ngram_fractions=[1.0, 1.0, 1.0],
        )
    )
    start = time.perf_counter()
    assert verdicts(step, PROSE * 2000) == [False]
    assert time.perf_counter() - start < 5
    assert step.stats.dropped == {"duplicate_5_grams": 1}
