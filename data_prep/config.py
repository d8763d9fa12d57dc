"""Configs of the data-prep stage (``lmpipe data prep``); defaults live here, YAML in configs/data/."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.config import Config, require, require_choice

INPUT_FORMATS = ("auto", "warc", "wiki")


@dataclass
class LanguageFilterConfig(Config):
    enabled: bool = True
    languages: list[str] = field(default_factory=lambda: ["en"])
    """Keep documents whose detected language is one of these (ISO 639-1)."""
    min_confidence: float = 0.5
    """Drop documents whose language score is below this (0..1)."""

    def check(self, prefix: str) -> None:
        require(0.0 <= self.min_confidence <= 1.0, f"{prefix}min_confidence", "must be in [0, 1]")
        require(bool(self.languages) or not self.enabled, f"{prefix}languages", "must name at least one language")


@dataclass
class QualityFilterConfig(Config):
    """A minimal Gopher-style quality gate (the full set arrives with the data-prep issue)."""

    enabled: bool = True
    min_words: int = 20
    max_words: int = 100_000
    min_mean_word_length: float = 3.0
    max_mean_word_length: float = 10.0
    min_alpha_word_fraction: float = 0.8
    """Fraction of words that contain at least one alphabetic character."""

    def check(self, prefix: str) -> None:
        require(0 <= self.min_words <= self.max_words, f"{prefix}min_words", "must be >= 0 and <= max_words")
        require(
            0 < self.min_mean_word_length <= self.max_mean_word_length,
            f"{prefix}min_mean_word_length",
            "must be > 0 and <= max_mean_word_length",
        )
        require(0.0 <= self.min_alpha_word_fraction <= 1.0, f"{prefix}min_alpha_word_fraction", "must be in [0, 1]")


@dataclass
class PrepConfig(Config):
    input: list[str] = field(default_factory=list)
    """Paths or globs of WARC files and Wikipedia dumps."""
    output: str = ""
    """Directory that receives docs/*.parquet, stats.json and the resolved config."""
    format: str = "auto"
    """auto picks by file name: *.warc[.gz] -> warc, *.xml[.bz2] -> wiki."""
    workers: int = 1
    docs_per_shard: int = 50_000
    language: LanguageFilterConfig = field(default_factory=LanguageFilterConfig)
    quality: QualityFilterConfig = field(default_factory=QualityFilterConfig)
    exact_dedup: bool = True

    def check(self, prefix: str) -> None:
        require(bool(self.input), f"{prefix}input", "give at least one input path (--input)")
        require(bool(self.output), f"{prefix}output", "give an output directory (--output)")
        require_choice(self.format, f"{prefix}format", INPUT_FORMATS)
        require(self.workers >= 1, f"{prefix}workers", "must be >= 1")
        require(self.docs_per_shard >= 1, f"{prefix}docs_per_shard", "must be >= 1")
