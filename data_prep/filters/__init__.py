"""Per-document filters: subclasses of ``BaseFilter`` that only decide keep or drop (and why);
the transforms among them (C4 line removal, PII redaction) also rewrite ``doc.text``."""

from data_prep.filters.badwords import BadWordsFilter
from data_prep.filters.base import BaseFilter
from data_prep.filters.c4 import C4Filter
from data_prep.filters.fineweb import FineWebQualityFilter
from data_prep.filters.language import LanguageFilter
from data_prep.filters.pii import PiiRedactor
from data_prep.filters.quality import QualityFilter
from data_prep.filters.repetition import RepetitionFilter
from data_prep.filters.url import UrlFilter

__all__ = [
    "BadWordsFilter",
    "BaseFilter",
    "C4Filter",
    "FineWebQualityFilter",
    "LanguageFilter",
    "PiiRedactor",
    "QualityFilter",
    "RepetitionFilter",
    "UrlFilter",
]
