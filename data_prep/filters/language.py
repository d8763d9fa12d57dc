"""Keep documents written in the configured languages (resiliparse ``detect_fast``).

``detect_fast`` returns an out-of-place rank distance, not a probability: 0 is a
perfect match with the language profile and values above its default cutoff of 1200
are "usually false results". The config speaks of a confidence in [0, 1], so the
rank is mapped linearly onto it::

    confidence = max(0, 1 - rank / 1200)        # "unknown" -> 0

``min_confidence: 0.5`` therefore keeps ranks up to 600. Real English web pages rank
about 150-370 (confidence 0.7-0.87), short or name-heavy texts 400-600.
"""

from __future__ import annotations

from resiliparse.parse.lang import detect_fast

from data_prep.config import LanguageFilterConfig
from data_prep.document import Document
from data_prep.filters.base import BaseFilter

RANK_CUTOFF = 1200


def language_confidence(rank: int, language: str) -> float:
    return 0.0 if language == "unknown" else max(0.0, 1.0 - rank / RANK_CUTOFF)


class LanguageFilter(BaseFilter):
    """Drops ``wrong_language`` (another or no detected language) and ``low_language_confidence``.

    Kept documents carry ``language`` and ``language_score`` in their metadata.
    """

    name = "language"

    def __init__(self, cfg: LanguageFilterConfig) -> None:
        super().__init__()
        self.languages = frozenset(cfg.languages)
        self.min_confidence = cfg.min_confidence

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        language, rank = detect_fast(doc.text, cutoff=RANK_CUTOFF)
        confidence = language_confidence(rank, language)
        doc.metadata["language"] = language
        doc.metadata["language_score"] = round(confidence, 3)
        if language not in self.languages:
            return False, "wrong_language"
        if confidence < self.min_confidence:
            return False, "low_language_confidence"
        return True
