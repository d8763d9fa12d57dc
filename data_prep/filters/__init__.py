"""Per-document filters: subclasses of ``BaseFilter`` that only decide keep or drop (and why)."""

from data_prep.filters.base import BaseFilter
from data_prep.filters.language import LanguageFilter
from data_prep.filters.quality import QualityFilter

__all__ = ["BaseFilter", "LanguageFilter", "QualityFilter"]
