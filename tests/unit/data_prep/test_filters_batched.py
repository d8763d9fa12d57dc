"""The repetition filter counts word n-grams for a whole batch in numpy: it must decide every document
exactly as the per-document definition does, whatever the batch, and a batch stage keeps the books and
the order of a per-document one."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from data_prep.config import RepetitionFilterConfig
from data_prep.document import Document
from data_prep.filters.base import BaseFilter, BatchFilter
from data_prep.filters.ngrams import DUPLICATE_NGRAM_SIZES, EDGE_PUNCTUATION, TOP_NGRAM_SIZES, ngram_chars
from data_prep.filters.repetition import RepetitionFilter


def reference_chars(text: str) -> tuple[list[int], list[int]]:
    """Gopher's n-gram statistics of one text, straight from the definition (Counter over all n-grams)."""
    words = [word for word in (token.strip(EDGE_PUNCTUATION) for token in text.split()) if word]
    top, duplicate = [], []
    for n in TOP_NGRAM_SIZES:
        counts = Counter(zip(*(words[k:] for k in range(n))))
        gram, count = counts.most_common(1)[0] if counts else ((), 0)  # first seen wins a tie
        top.append(sum(map(len, gram)) * count if count > 1 else 0)
    for n in DUPLICATE_NGRAM_SIZES:
        grams = list(zip(*(words[k:] for k in range(n))))
        counts = Counter(grams)
        covered = set()
        for start, gram in enumerate(grams):
            if counts[gram] > 1:
                covered.update(range(start, start + n))
        duplicate.append(sum(len(words[i]) for i in covered))
    return top, duplicate


def random_texts(seed: int, count: int) -> list[str]:
    """Short texts over a tiny vocabulary, so that n-grams of every size repeat, with every kind of
    separator ``str.split`` knows (no-break space, file separator, line breaks) and edge punctuation."""
    rng = random.Random(seed)
    vocab = ["a", "b", "c", "the", "of", "spam", "x-y", "v1.2", "...", "(a)", "“b”", "é"]
    separators = [" ", " ", "\n", "\n\n", ", ", "\u00a0", "\x1c", " \n \n", "\u3000"]
    texts = ["", "   ", "!!! ... ???"]
    for _ in range(count):
        words = [rng.choice(vocab[: rng.randint(1, len(vocab))]) for _ in range(rng.randint(0, 90))]
        texts.append("".join(word + rng.choice(separators) for word in words))
    return texts


@pytest.mark.parametrize("batch", [1, 7, 256])
def test_batched_ngram_counts_equal_the_definition(batch):
    texts = random_texts(seed=batch, count=600)
    for lo in range(0, len(texts), batch):
        counted = ngram_chars(texts[lo : lo + batch])
        for row, text in enumerate(texts[lo : lo + batch]):
            top, duplicate = reference_chars(text)
            assert counted.top[row].tolist() == top, text
            assert counted.duplicate[row].tolist() == duplicate, text


def test_a_top_ngram_tie_goes_to_the_first_seen():
    # "a b" and "cc dd" both occur twice; "a b" comes first, so its 2 x 2 characters count, not 2 x 4
    assert ngram_chars(["a b x cc dd y a b z cc dd"]).top[0, 0] == 4
    assert ngram_chars(["cc dd x a b y cc dd z a b"]).top[0, 0] == 8


def test_ngrams_never_span_two_documents():
    # each text alone repeats nothing; joined, "p q r s t" would repeat across the boundary
    counted = ngram_chars(["p q r s t", "p q r s t u"][::-1] + ["p q r s t"])
    assert counted.top.sum() == counted.duplicate.sum() == 0


def test_verdicts_do_not_depend_on_the_batch():
    texts = random_texts(seed=3, count=400)
    docs = [Document(str(i), text, "cc") for i, text in enumerate(texts)]
    cfg = RepetitionFilterConfig(top_ngram_fractions=[0.3, 0.3, 0.3], duplicate_ngram_fractions=[0.4] * 6)
    whole = RepetitionFilter(cfg).filter_batch(docs)
    one_by_one = [RepetitionFilter(cfg).filter(doc) for doc in docs]
    assert whole == one_by_one
    assert {verdict if verdict is True else verdict[1] for verdict in whole} >= {
        True,
        "duplicate_lines",
        "top_2_gram",
    }


class EveryOther(BatchFilter):
    name = "every_other"
    batch_docs = 3
    batch_chars = 10

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[str]] = []

    def filter_batch(self, docs):
        self.batches.append([doc.id for doc in docs])
        return [True if int(doc.id) % 2 else (False, "even") for doc in docs]


def test_batch_stage_keeps_order_and_books_and_bounds_its_batches():
    texts = ["aa", "bbbbbbbbbbbb", "c", "d", "e", "f", "g"]  # the 12-character one closes its batch
    docs = [Document(str(i), text, "cc") for i, text in enumerate(texts)]
    step = EveryOther()
    assert [doc.id for doc in step.run(iter(docs))] == ["1", "3", "5"]
    assert step.batches == [["0", "1"], ["2", "3", "4"], ["5", "6"]]
    stats = step.stats
    assert (stats.input, stats.kept, stats.dropped) == (7, 3, {"even": 4})
    assert stats.bytes == len("bbbbbbbbbbbb") + 2


def test_keys_ranked_down_where_they_could_overflow_count_the_same(monkeypatch):
    """A batch of many documents with large vocabularies would overflow ``doc * vocab * vocab``: its
    word keys are ranked first. Forced here with a tiny limit, the counts must not change."""
    texts = random_texts(seed=5, count=200)
    expected = ngram_chars(texts)
    monkeypatch.setattr("data_prep.filters.ngrams._INT64_LIMIT", 16)
    counted = ngram_chars(texts)
    assert (counted.top == expected.top).all() and (counted.duplicate == expected.duplicate).all()


class Recording(BaseFilter):
    """Keeps every document but "bad", whose ValueError counts as a document error; logs each call."""

    batch_docs = 3
    document_errors = (ValueError,)

    def __init__(self, name: str, calls: list[str]) -> None:
        super().__init__()
        self.name, self.calls = name, calls

    def filter(self, doc):
        self.calls.append(f"{self.name}{doc.id}")
        if doc.text == "bad":
            raise ValueError("broken")
        return True


def test_each_stage_decides_a_whole_batch_before_the_next_stage_sees_it():
    calls: list[str] = []
    first, second = Recording("a", calls), Recording("b", calls)
    docs = [Document(str(i), "bad" if i == 1 else "ok", "cc") for i in range(5)]
    assert [doc.id for doc in second.run(first.run(iter(docs)))] == ["0", "2", "3", "4"]
    # b's first batch of 3 needs a's second batch too (a kept 2 of its first 3): a decides 0-4, then b
    assert calls == ["a0", "a1", "a2", "a3", "a4", "b0", "b2", "b3", "b4"]
    assert (first.stats.input, first.stats.kept, list(first.stats.errors)) == (5, 4, ["ValueError"])
