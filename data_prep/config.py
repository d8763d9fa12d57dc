"""Configs of the data-prep stage (``lmpipe data prep``); defaults live here, YAML in configs/data/."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field

from data_prep.inputs import RetryPolicy
from launch.slurm.profile import SlurmArrayProfile
from pipeline.core.config import Config, require, require_choice

INPUT_FORMATS = ("auto", "warc", "wet", "wat", "wiki", "jsonl", "parquet", "hf")
EXECUTORS = ("local", "slurm")  # data_prep.executor.EXECUTORS
HTML_EXTRACTORS = ("resiliparse", "trafilatura")


def _installed(module: str) -> bool:
    """Whether an optional dependency can be imported, without importing it (slow for trafilatura)."""
    return importlib.util.find_spec(module) is not None


@dataclass
class ExtractConfig(Config):
    html: str = "resiliparse"
    """HTML -> main text: resiliparse (default, fast) or trafilatura (``pip install 'lmpipe[extras]'``)."""
    min_main_chars: int = 200
    """resiliparse: a page whose main-content text is shorter than this is extracted again without its
    main-content heuristics (only nav, header, footer and aside dropped), and that text is kept if it is
    at least this long. List pages and tables lose their items to the heuristics' link-density rule; 200
    characters is below anything the default quality filter keeps (50 words). 0 turns it off."""

    def check(self, prefix: str) -> None:
        require_choice(self.html, f"{prefix}html", HTML_EXTRACTORS)
        require(self.min_main_chars >= 0, f"{prefix}min_main_chars", "must be >= 0")
        require(
            self.html != "trafilatura" or _installed("trafilatura"),
            f"{prefix}html",
            "trafilatura is not installed; pip install 'lmpipe[extras]'",
        )


@dataclass
class LanguageFilterConfig(Config):
    enabled: bool = True
    languages: list[str] = field(default_factory=lambda: ["en"])
    """Keep documents whose detected language is one of these (ISO 639-1)."""
    min_confidence: float = 0.5
    """Drop documents whose language score is below this (0..1)."""
    fasttext_model: str = ""
    """A local fastText language-ID model (e.g. ``lid.176.bin``/``.ftz``) to use instead of resiliparse's
    detector; empty = resiliparse. Never downloaded: the file must be on disk."""

    def check(self, prefix: str) -> None:
        require(0.0 <= self.min_confidence <= 1.0, f"{prefix}min_confidence", "must be in [0, 1]")
        require(
            not self.fasttext_model or os.path.isfile(self.fasttext_model),
            f"{prefix}fasttext_model",
            f"no such file: {self.fasttext_model}",
        )
        require(
            not self.fasttext_model or _installed("fasttext"),
            f"{prefix}fasttext_model",
            "fasttext is not installed; pip install 'lmpipe[extras]'",
        )
        require(
            bool(self.languages) or not self.enabled, f"{prefix}languages", "must name at least one language"
        )


@dataclass
class QualityFilterConfig(Config):
    """Gopher's quality rules (Rae et al. 2021, appendix A); defaults are the published thresholds."""

    enabled: bool = True
    min_words: int = 50
    max_words: int = 100_000
    min_mean_word_length: float = 3.0
    max_mean_word_length: float = 10.0
    min_alpha_word_fraction: float = 0.8
    """Fraction of words that contain at least one alphabetic character."""
    max_symbol_word_ratio: float = 0.1
    """Most ``#`` per word, and most ellipses (``...`` or ``…``) per word, each counted on its own."""
    max_bullet_line_fraction: float = 0.9
    """Most of the non-empty lines that may start with a bullet point."""
    max_ellipsis_line_fraction: float = 0.3
    """Most of the non-empty lines that may end with an ellipsis."""
    min_stop_words: int = 2
    """Fewest distinct English stop words (the, be, to, of, and, that, have, with) a document must hold
    (Gopher: 2). English-only, like the default language stage; 0 turns it off for other languages."""

    def check(self, prefix: str) -> None:
        require(0 <= self.min_words <= self.max_words, f"{prefix}min_words", "must be >= 0 and <= max_words")
        require(
            0 < self.min_mean_word_length <= self.max_mean_word_length,
            f"{prefix}min_mean_word_length",
            "must be > 0 and <= max_mean_word_length",
        )
        for key in ("min_alpha_word_fraction", "max_bullet_line_fraction", "max_ellipsis_line_fraction"):
            require(0.0 <= getattr(self, key) <= 1.0, f"{prefix}{key}", "must be in [0, 1]")
        require(self.max_symbol_word_ratio >= 0.0, f"{prefix}max_symbol_word_ratio", "must be >= 0")
        require(
            0 <= self.min_stop_words <= 8,
            f"{prefix}min_stop_words",
            "must be in [0, 8] (there are 8 stop words)",
        )


@dataclass
class RepetitionFilterConfig(Config):
    """Gopher's repetition rules (Rae et al. 2021, table A1); each fraction is the most a document may
    have, and every character fraction is over all the document's characters."""

    enabled: bool = True
    max_duplicate_line_fraction: float = 0.30
    """Non-empty lines that repeat an earlier line, over all non-empty lines."""
    max_duplicate_line_char_fraction: float = 0.20
    """Characters in those repeated lines, over the document's characters."""
    max_duplicate_paragraph_fraction: float = 0.30
    """Paragraphs (split at blank lines) that repeat an earlier one, over all paragraphs."""
    max_duplicate_paragraph_char_fraction: float = 0.20
    top_ngram_fractions: list[float] = field(default_factory=lambda: [0.20, 0.18, 0.16])
    """For n = 2, 3, 4: word characters in every occurrence of the most frequent word n-gram (if it
    occurs twice or more), over the document's characters."""
    duplicate_ngram_fractions: list[float] = field(
        default_factory=lambda: [0.15, 0.14, 0.13, 0.12, 0.11, 0.10]
    )
    """For n = 5..10: characters of the words covered by any n-gram seen twice or more (each word
    counted once), over the document's characters."""

    def check(self, prefix: str) -> None:
        for key in (
            "max_duplicate_line_fraction",
            "max_duplicate_line_char_fraction",
            "max_duplicate_paragraph_fraction",
            "max_duplicate_paragraph_char_fraction",
        ):
            require(0.0 <= getattr(self, key) <= 1.0, f"{prefix}{key}", "must be in [0, 1]")
        require(
            len(self.top_ngram_fractions) == 3,
            f"{prefix}top_ngram_fractions",
            "give 3 fractions (n = 2, 3, 4)",
        )
        require(
            len(self.duplicate_ngram_fractions) == 6,
            f"{prefix}duplicate_ngram_fractions",
            "give 6 fractions (n = 5..10)",
        )
        for key in ("top_ngram_fractions", "duplicate_ngram_fractions"):
            require(
                all(0.0 <= f <= 1.0 for f in getattr(self, key)), f"{prefix}{key}", "each must be in [0, 1]"
            )


@dataclass
class C4FilterConfig(Config):
    """C4's line and page rules (Raffel et al. 2020, section 2.2); defaults are the published ones (5
    words a line, 3 sentences a page; datatrove's defaults, 3 and 5, are FineWeb's)."""

    enabled: bool = True
    sources: list[str] = field(default_factory=lambda: ["cc"])
    """Document sources it applies to; others pass untouched (Wikipedia has headings without full stops)."""
    min_words_per_line: int = 5
    """Lines with fewer words are removed (C4: 5)."""
    min_sentences: int = 3
    """Pages with fewer sentences left after line removal are dropped (C4: 3)."""
    max_word_length: int = 1000
    """Lines with a longer word are removed."""
    remove_unterminated_lines: bool = True
    """Remove lines that do not end in ``.``, ``?``, ``!`` or ``"`` (or end in an ellipsis); FineWeb turns
    this C4 rule off."""
    remove_javascript_lines: bool = True
    remove_policy_lines: bool = True
    """Lines about cookies, terms of use and privacy policies."""
    drop_lorem_ipsum: bool = True
    drop_curly_bracket: bool = True
    """A ``{`` in a line that survives the line rules means code, and drops the page."""
    remove_citations: bool = True
    """Remove ``[1]``, ``[edit]`` and ``[citation needed]`` from each line before judging it."""

    def check(self, prefix: str) -> None:
        require(self.min_words_per_line >= 0, f"{prefix}min_words_per_line", "must be >= 0")
        require(self.min_sentences >= 0, f"{prefix}min_sentences", "must be >= 0")
        require(self.max_word_length >= 1, f"{prefix}max_word_length", "must be >= 1")


@dataclass
class FineWebQualityFilterConfig(Config):
    """FineWeb's own quality rules (Penedo et al. 2024), after Gopher and C4; thresholds are FineWeb's.
    Off by default (the default recipe is Gopher + C4); configs/data/fineweb.yaml turns it on."""

    enabled: bool = False
    min_line_punctuation_fraction: float = 0.12
    """Fewest of the non-empty lines that must end in terminal punctuation."""
    max_short_line_fraction: float = 0.67
    """Most of the non-empty lines that may be ``short_line_length`` characters or shorter."""
    short_line_length: int = 30
    max_duplicate_line_char_fraction: float = 0.01
    """Characters of lines repeating an earlier line, over the document's characters without newlines."""
    max_newline_fraction: float = 0.3
    """Most newlines per word (words and punctuation marks, as FineWeb's tokenizer counts them)."""

    def check(self, prefix: str) -> None:
        for key in (
            "min_line_punctuation_fraction",
            "max_short_line_fraction",
            "max_duplicate_line_char_fraction",
        ):
            require(0.0 <= getattr(self, key) <= 1.0, f"{prefix}{key}", "must be in [0, 1]")
        require(self.short_line_length >= 0, f"{prefix}short_line_length", "must be >= 0")
        require(self.max_newline_fraction >= 0.0, f"{prefix}max_newline_fraction", "must be >= 0")


@dataclass
class UrlFilterConfig(Config):
    """Drops pages by their URL; every list is a file path, and with no list the stage is off."""

    enabled: bool = True
    sources: list[str] = field(default_factory=lambda: ["cc"])
    """Document sources it applies to (a wiki page's ``url`` is its title)."""
    domain_blocklists: list[str] = field(default_factory=list)
    """Files of one domain per line (``#`` starts a comment); a listed domain blocks its subdomains too."""
    adblock_lists: list[str] = field(default_factory=list)
    """EasyList-style files (plain or .gz); only their ``||domain^`` rules are used."""
    banned_words: str = ""
    """A file of one word per line (``#`` lines are off); a URL with one as a token is dropped."""

    @property
    def has_lists(self) -> bool:
        return bool(self.domain_blocklists or self.adblock_lists or self.banned_words)


@dataclass
class BadWordsFilterConfig(Config):
    enabled: bool = False
    path: str = ""
    """A file of one word or phrase per line, lower case (``#`` lines are off)."""
    max_fraction: float = 0.0
    """Most of a document's words that may be on the list; 0 is C4's rule (any listed word drops the page)."""

    def check(self, prefix: str) -> None:
        require(bool(self.path) or not self.enabled, f"{prefix}path", "give the bad-words list file")
        require(0.0 <= self.max_fraction <= 1.0, f"{prefix}max_fraction", "must be in [0, 1]")


@dataclass
class PiiConfig(Config):
    """Redacts e-mail addresses and IPv4 addresses; never drops a document."""

    enabled: bool = True
    email_replacement: str = "<EMAIL>"
    ip_replacement: str = "<IP>"


@dataclass
class MinHashConfig(Config):
    """MinHash-LSH near-dedup (``data_prep.dedup.minhash``); two documents become candidates when all
    ``rows_per_band`` MinHashes of any one band agree."""

    enabled: bool = True
    ngram: int = 5
    """Words per shingle."""
    num_bands: int = 14
    rows_per_band: int = 8
    """MinHashes per band; ``num_bands * rows_per_band`` hash functions in all (112 by default)."""
    seed: int = 1
    """Seeds the hash functions: signatures from different seeds are not comparable."""

    @property
    def num_perm(self) -> int:
        return self.num_bands * self.rows_per_band

    @property
    def threshold(self) -> float:
        """Jaccard similarity where the S-curve is steepest, ``(1/b)**(1/r)``: 0.72 for 14x8."""
        return (1.0 / self.num_bands) ** (1.0 / self.rows_per_band)

    def probability(self, jaccard: float) -> float:
        """Chance that two documents of this Jaccard similarity become candidates."""
        return 1.0 - (1.0 - jaccard**self.rows_per_band) ** self.num_bands

    def check(self, prefix: str) -> None:
        require(self.ngram >= 1, f"{prefix}ngram", "must be >= 1")
        require(self.num_bands >= 1, f"{prefix}num_bands", "must be >= 1")
        require(self.rows_per_band >= 1, f"{prefix}rows_per_band", "must be >= 1")
        require(self.seed >= 0, f"{prefix}seed", "must be >= 0")


@dataclass
class DedupConfig(Config):
    """Deduplication across every input of a run (not per file): each finished prep task leaves
    per-document keys, one ``cluster`` task decides what goes, and a removal task per input writes
    the final ``docs/``. Of exact and URL duplicates the first copy in (task name, position) order is
    kept; of a near-duplicate cluster, its centre (``data_prep.dedup.minhash``)."""

    exact: bool = True
    """Drop documents whose normalised text (lower case, punctuation and spacing folded) was seen."""
    url: bool = True
    """Drop documents whose URL was seen (Common Crawl revisits pages); only for ``url_sources``."""
    url_sources: list[str] = field(default_factory=lambda: ["cc"])
    minhash: MinHashConfig = field(default_factory=MinHashConfig)
    keep_intermediate: bool = False
    """Keep ``filtered/`` (documents before dedup) after the run; by default it is deleted at the end."""

    @property
    def enabled(self) -> bool:
        return self.exact or self.url or self.minhash.enabled


@dataclass
class RemoteConfig(Config):
    """Reading ``http(s)://`` inputs. A connection that drops, stalls or is refused, and an HTTP error
    answer (500, 503, 429, ...), is retried from the byte reached (``Range: bytes=N-``); 400, 401, 403,
    404, 405, 410 and 451 are not. An input still unreadable after the last try is recorded in
    stats.json as ``read/remote_failed`` (URL and reason) and left out, every other input goes through
    every stage, the run exits 1, and a rerun retries only the failed inputs (``data_prep.failures``).
    These keys change how a run reads, not what it writes: a rerun may change them."""

    attempts: int = 6
    """Tries at one byte position before the input fails; the count restarts whenever a try makes progress."""
    timeout_s: float = 60.0
    """Socket timeout of a request: a server silent this long (before answering or mid-body) fails the try."""
    backoff_s: float = 1.0
    """Seconds before the first retry, doubled for each further one up to ``max_wait_s``."""
    max_wait_s: float = 30.0
    """Longest wait between tries; a longer ``Retry-After`` from the server is cut to this."""

    def check(self, prefix: str) -> None:
        require(self.attempts >= 1, f"{prefix}attempts", "must be >= 1")
        require(self.timeout_s > 0, f"{prefix}timeout_s", "must be > 0")
        require(self.backoff_s >= 0, f"{prefix}backoff_s", "must be >= 0")
        require(self.max_wait_s >= self.backoff_s, f"{prefix}max_wait_s", "must be >= backoff_s")

    def build(self) -> RetryPolicy:
        return RetryPolicy(
            attempts=self.attempts, backoff=self.backoff_s, max_wait=self.max_wait_s, timeout=self.timeout_s
        )


@dataclass
class PrepConfig(Config):
    input: list[str] = field(default_factory=list)
    """Paths or globs of WARC files and Wikipedia dumps."""
    output: str = ""
    """Directory that receives docs/*.parquet, stats.json and the resolved config."""
    format: str = "auto"
    """auto picks by file name: *.warc[.gz] -> warc, *.xml[.bz2] -> wiki."""
    workers: int = 1
    """Processes, one input file each at a time (executor local)."""
    executor: str = "local"
    """local: this machine (``workers`` processes); slurm: a Slurm job array (see ``slurm``)."""
    slurm: SlurmArrayProfile = field(default_factory=SlurmArrayProfile)
    """``executor: slurm``: the cluster profile of each stage's job array (``launch.slurm.profile``)."""
    docs_per_shard: int = 50_000
    remote: RemoteConfig = field(default_factory=RemoteConfig)
    """Retries and timeouts of ``http(s)://`` inputs."""
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    language: LanguageFilterConfig = field(default_factory=LanguageFilterConfig)
    url: UrlFilterConfig = field(default_factory=UrlFilterConfig)
    c4: C4FilterConfig = field(default_factory=C4FilterConfig)
    quality: QualityFilterConfig = field(default_factory=QualityFilterConfig)
    repetition: RepetitionFilterConfig = field(default_factory=RepetitionFilterConfig)
    fineweb: FineWebQualityFilterConfig = field(default_factory=FineWebQualityFilterConfig)
    badwords: BadWordsFilterConfig = field(default_factory=BadWordsFilterConfig)
    pii: PiiConfig = field(default_factory=PiiConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)

    def check(self, prefix: str) -> None:
        require(bool(self.input), f"{prefix}input", "give at least one input path (--input)")
        require(bool(self.output), f"{prefix}output", "give an output directory (--output)")
        require_choice(self.format, f"{prefix}format", INPUT_FORMATS)
        require(self.workers >= 1, f"{prefix}workers", "must be >= 1")
        require_choice(self.executor, f"{prefix}executor", EXECUTORS)
        require(self.docs_per_shard >= 1, f"{prefix}docs_per_shard", "must be >= 1")
        require(
            not (
                self.quality.enabled and self.quality.min_stop_words and set(self.language.languages) - {"en"}
            ),
            f"{prefix}quality.min_stop_words",
            "counts English stop words, so it would drop every page in "
            f"{sorted(set(self.language.languages) - {'en'})}: set quality.min_stop_words=0 to keep them",
        )
