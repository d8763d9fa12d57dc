"""Keep documents written in the configured languages (resiliparse ``detect_fast``).

``detect_fast`` returns an out-of-place rank distance, not a probability: 0 is a
perfect match with the language profile and values above its default cutoff of 1200
are "usually false results". The config speaks of a confidence in [0, 1], so the
rank is mapped linearly onto it::

    confidence = max(0, 1 - rank / 1200)        # "unknown" -> 0

``min_confidence: 0.5`` therefore keeps ranks up to 600. Real English web pages rank
about 150-370 (confidence 0.7-0.87), short or name-heavy texts 400-600.

With ``fasttext_model`` set (``pip install 'lmpipe[extras]'``), that local fastText model
(e.g. ``lid.176.bin``, labels ``__label__<code>``) decides instead, and the confidence is
its probability for the top label, as in datatrove and FineWeb.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from contextlib import redirect_stderr
from typing import Any

from resiliparse.parse.lang import detect_fast

from data_prep.config import LanguageFilterConfig
from data_prep.document import Document
from data_prep.filters.base import BaseFilter
from pipeline.core.errors import ConfigError

RANK_CUTOFF = 1200


def language_confidence(rank: int, language: str) -> float:
    return 0.0 if language == "unknown" else max(0.0, 1.0 - rank / RANK_CUTOFF)


def resiliparse_language(text: str) -> tuple[str, float]:
    language, rank = detect_fast(text, cutoff=RANK_CUTOFF)
    return language, language_confidence(rank, language)


class FastTextLanguage:
    """``text -> (language, probability)`` by a local fastText model, loaded once."""

    def __init__(self, model_path: str) -> None:
        try:
            import fasttext
        except ImportError:
            raise ConfigError(
                "config error: language.fasttext_model: fasttext is not installed; "
                "pip install 'lmpipe[extras]'"
            ) from None
        self.model_path = model_path
        with redirect_stderr(io.StringIO()):  # its load_model warns, on every load, of an API change of 2019
            self.model: Any = fasttext.load_model(model_path)

    def __reduce__(self) -> tuple[type, tuple[str]]:
        return FastTextLanguage, (self.model_path,)  # the model is not picklable: the receiver loads it again

    def __call__(self, text: str) -> tuple[str, float]:
        # The binding's own ``f.predict``: ``model.predict`` breaks on numpy 2 (np.array(copy=False)).
        # fastText reads one line, so the text becomes one; bytes, so a lone surrogate cannot fail it.
        line = (text.replace("\n", " ") + "\n").encode("utf-8", "replace")
        predictions = self.model.f.predict(line, 1, 0.0, "replace")
        if not predictions:
            return "unknown", 0.0
        probability, label = predictions[0]
        return label.removeprefix("__label__"), min(1.0, probability)  # softmax can overshoot 1 by rounding


class LanguageFilter(BaseFilter):
    """Drops ``wrong_language`` (another or no detected language) and ``low_language_confidence``.

    Kept documents carry ``language`` and ``language_score`` in their metadata.
    """

    name = "language"

    def __init__(self, cfg: LanguageFilterConfig) -> None:
        super().__init__()
        self.languages = frozenset(cfg.languages)
        self.min_confidence = cfg.min_confidence
        self.detect: Callable[[str], tuple[str, float]] = (
            FastTextLanguage(cfg.fasttext_model) if cfg.fasttext_model else resiliparse_language
        )

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        language, confidence = self.detect(doc.text)
        doc.metadata["language"] = language
        doc.metadata["language_score"] = round(confidence, 3)
        if language not in self.languages:
            return False, "wrong_language"
        if confidence < self.min_confidence:
            return False, "low_language_confidence"
        return True
