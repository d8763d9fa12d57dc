"""``language.fasttext_model``: a local fastText model decides the language, its probability the confidence.

The model is a tiny one trained here on invented sentences: nothing is downloaded.
"""

from __future__ import annotations

import pickle
import random
import sys
from pathlib import Path

import pytest

from data_prep.config import LanguageFilterConfig, PrepConfig
from data_prep.document import Document
from data_prep.filters.language import LanguageFilter
from pipeline.core.errors import ConfigError
from pipeline.testing import require_module

WORDS = {
    "en": "the house is big and old we walk over the bridge to the river where children play every morning "
    "with their friends because weather stays warm this summer".split(),
    "de": "das haus ist groß und alt wir gehen über die brücke zum fluss wo kinder jeden morgen mit ihren "
    "freunden spielen weil wetter diesen sommer warm bleibt".split(),
    "fr": "la maison est grande et vieille nous marchons sur le pont vers la rivière où les enfants jouent "
    "chaque matin avec leurs amis parce que temps reste chaud cet été".split(),
}


def sentence(rng: random.Random, language: str, n: int = 10) -> str:
    return " ".join(rng.choices(WORDS[language], k=n))


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    fasttext = require_module("fasttext")
    rng = random.Random(0)
    out = tmp_path_factory.mktemp("lid")
    train = out / "train.txt"
    train.write_text(
        "".join(f"__label__{lang} {sentence(rng, lang)}\n" for _ in range(200) for lang in WORDS)
    )
    model = fasttext.train_supervised(
        str(train), epoch=10, lr=0.5, dim=16, minn=2, maxn=4, bucket=20_000, thread=1, verbose=0
    )
    model.save_model(str(out / "lid.bin"))
    return out / "lid.bin"


def language_filter(model_path: Path, **kwargs) -> LanguageFilter:
    return LanguageFilter(LanguageFilterConfig(fasttext_model=str(model_path), **kwargs))


def test_keeps_the_configured_languages_and_records_the_score(model_path):
    rng = random.Random(1)
    docs = [
        Document(lang, "\n".join(sentence(rng, lang) for _ in range(4)), "cc") for lang in ("en", "de", "fr")
    ]
    step = language_filter(model_path, languages=["en", "fr"], min_confidence=0.8)
    kept = list(step.run(docs))
    assert [doc.id for doc in kept] == ["en", "fr"]
    assert [doc.metadata["language"] for doc in docs] == ["en", "de", "fr"]
    assert all(0.8 <= doc.metadata["language_score"] <= 1.0 for doc in docs)
    assert step.stats.dropped == {"wrong_language": 1}


def test_confidence_is_the_model_probability_and_min_confidence_applies_to_it(model_path):
    import fasttext

    mixed = "the house is big and old we walk over das haus ist groß"
    [(probability, label)] = fasttext.load_model(str(model_path)).f.predict(mixed + "\n", 1, 0.0, "strict")
    assert label == "__label__en" and 0.4 < probability < 0.95

    lenient = language_filter(model_path, min_confidence=round(probability, 3) - 0.01)
    [doc] = lenient.run([Document("m", mixed, "cc")])
    assert doc.metadata == {"language": "en", "language_score": round(probability, 3)}

    strict = language_filter(model_path, min_confidence=round(probability, 3) + 0.01)
    assert list(strict.run([Document("m", mixed, "cc")])) == []
    assert strict.stats.dropped == {"low_language_confidence": 1}


def test_multiline_and_odd_text_is_predicted_not_an_error(model_path):
    step = language_filter(model_path, languages=["en", "de", "fr"], min_confidence=0.0)
    texts = ["the house\nis big\r\nand old\n\n", "", "la maison\x00est grande"]
    assert len(list(step.run([Document(str(i), t, "cc") for i, t in enumerate(texts)]))) == len(texts)
    assert step.stats.errors == {}
    assert (
        step.detect("\ud800 das haus ist groß")[0] == "de"
    )  # a lone surrogate (from a JSON escape) is replaced


def test_a_filter_with_a_model_survives_pickling(model_path):
    step = language_filter(model_path)
    copy = pickle.loads(pickle.dumps(step))
    [doc] = copy.run([Document("e", "the house is big and old", "cc")])
    assert doc.metadata["language"] == "en"


def test_a_missing_model_file_fails_validation(tmp_path):
    with pytest.raises(ConfigError, match="fasttext_model.*no such file: /nope"):
        PrepConfig.from_dict(
            {"input": ["x.warc.gz"], "output": str(tmp_path), "language": {"fasttext_model": "/nope"}}
        )


def test_missing_fasttext_fails_at_construction_in_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "fasttext", None)  # import fasttext -> ImportError
    with pytest.raises(ConfigError, match=r"pip install 'lmpipe\[extras\]'") as failure:
        language_filter(tmp_path / "lid.bin")
    assert "\n" not in str(failure.value)
    LanguageFilter(LanguageFilterConfig())  # the default needs nothing optional
