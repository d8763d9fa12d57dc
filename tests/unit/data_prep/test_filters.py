"""Filters decide keep/drop; the base class keeps the counts; dedup drops what it has seen."""

from __future__ import annotations

import base64
import random

import pytest

from data_prep.config import LanguageFilterConfig, QualityFilterConfig
from data_prep.document import Document
from data_prep.filters import BaseFilter, LanguageFilter, QualityFilter
from data_prep.filters.language import language_confidence

ENGLISH = (
    "Varnholt is a small market town in the north of the region. The town lies on the banks of a wide river, "
    "and most of its old houses were built from local stone more than two hundred years ago. Every summer "
    "the people of the town hold a festival with music, food and a boat race."
)
GERMAN = (
    "Varnholt ist eine kleine Stadt im Norden der Region. Die Stadt liegt am Ufer eines breiten Flusses, und "
    "die meisten alten Häuser wurden vor mehr als zweihundert Jahren aus Stein gebaut. Jeden Sommer feiern "
    "die Einwohner ein Fest mit Musik, Essen und einem Bootsrennen."
)


def doc(text: str, id: str = "d") -> Document:
    return Document(id, text, "cc", "https://example.org/")


def run(step: BaseFilter, *texts: str) -> list[str]:
    return [d.text for d in step.run(doc(t, str(i)) for i, t in enumerate(texts))]


class EvenLength(BaseFilter):
    name = "even"
    document_errors = (ZeroDivisionError,)

    def filter(self, d: Document) -> bool | tuple[bool, str]:
        if d.text == "boom":
            raise ZeroDivisionError("bad document")
        if d.text == "plain no":
            return False
        return len(d.text) % 2 == 0 or (False, "odd_length")


def test_base_counts_kept_dropped_by_reason_and_document_errors():
    step = EvenLength()
    assert run(step, "ab", "abc", "abcd", "boom", "plain no", "x") == ["ab", "abcd"]
    stats = step.stats
    assert (stats.input, stats.kept, stats.bytes) == (6, 2, 6)
    assert stats.dropped == {"odd_length": 2, "filtered": 1}
    assert stats.errors["ZeroDivisionError"]["count"] == 1
    assert (
        stats.input == stats.kept + sum(stats.dropped.values()) + stats.errors["ZeroDivisionError"]["count"]
    )


def test_base_lets_unexpected_exceptions_through():
    class Buggy(BaseFilter):
        name = "buggy"

        def filter(self, d: Document) -> bool:
            raise KeyError("a bug, not a bad document")

    with pytest.raises(KeyError):
        run(Buggy(), "text")


def test_quality_keeps_prose_and_drops_junk_with_its_reason():
    rng = random.Random(0)
    step = QualityFilter(QualityFilterConfig())
    short = "Page not found. Please try again later."
    symbols = " ".join("".join(rng.choices("#$%&*+=/|<>~^@0123456789", k=5)) for _ in range(60))
    blobs = " ".join(base64.b64encode(rng.randbytes(24)).decode() for _ in range(60))
    assert run(step, ENGLISH, short, symbols, blobs) == [ENGLISH]
    assert step.stats.dropped == {"too_few_words": 1, "too_few_alpha_words": 1, "mean_word_length": 1}


def test_quality_max_words_and_min_alpha_fraction_follow_the_config():
    step = QualityFilter(QualityFilterConfig(max_words=30))
    assert run(step, ENGLISH) == [] and step.stats.dropped == {"too_many_words": 1}
    numbers = ENGLISH + " 1 2 3 4 5 6 7 8 9 10 11 12"  # 56 of 68 words (0.82) have a letter
    assert run(QualityFilter(QualityFilterConfig(min_alpha_word_fraction=0.7)), numbers) == [numbers]
    assert run(QualityFilter(QualityFilterConfig(min_alpha_word_fraction=0.9)), numbers) == []


def test_language_keeps_the_configured_language_and_records_it():
    step = LanguageFilter(LanguageFilterConfig(languages=["en"], min_confidence=0.5))
    kept = list(step.run([doc(ENGLISH), doc(GERMAN)]))
    assert [d.text for d in kept] == [ENGLISH]
    assert kept[0].metadata["language"] == "en" and kept[0].metadata["language_score"] >= 0.5
    assert step.stats.dropped == {"wrong_language": 1}
    german_only = LanguageFilter(LanguageFilterConfig(languages=["de"]))
    assert run(german_only, ENGLISH, GERMAN) == [GERMAN]


def test_language_drops_weak_detections_below_min_confidence():
    step = LanguageFilter(LanguageFilterConfig(languages=["en"], min_confidence=0.95))
    assert run(step, ENGLISH) == [] and step.stats.dropped == {"low_language_confidence": 1}


def test_language_confidence_maps_the_rank_linearly():
    assert language_confidence(0, "en") == 1.0
    assert language_confidence(600, "en") == 0.5
    assert language_confidence(1500, "en") == 0.0
    assert language_confidence(0, "unknown") == 0.0
