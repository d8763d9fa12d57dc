"""Configs of ``lmpipe data train-tokenizer`` and ``lmpipe data tokenize``."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.config import Config, require

SPECIAL_TOKENS = ["<|bos|>", "<|eos|>", "<|pad|>", "<|user|>", "<|assistant|>"]
BOS_TOKEN, EOS_TOKEN, PAD_TOKEN = SPECIAL_TOKENS[:3]


@dataclass
class TokenizerTrainConfig(Config):
    input: str = ""
    """A docs directory written by ``data prep`` (its docs/*.parquet)."""
    output: str = ""
    """Directory that receives tokenizer.json."""
    vocab_size: int = 8192
    min_frequency: int = 2
    max_bytes: int = 200_000_000
    """Stop feeding text to the trainer after this many bytes (a sample is enough)."""
    special_tokens: list[str] = field(default_factory=lambda: list(SPECIAL_TOKENS))

    def check(self, prefix: str) -> None:
        require(bool(self.input), f"{prefix}input", "give the docs directory (--input)")
        require(bool(self.output), f"{prefix}output", "give an output directory (--output)")
        require(256 + len(self.special_tokens) < self.vocab_size <= 4_294_967_295, f"{prefix}vocab_size",
                "must exceed 256 byte tokens plus the special tokens")
        require(self.max_bytes > 0, f"{prefix}max_bytes", "must be > 0")
        require(self.min_frequency >= 1, f"{prefix}min_frequency", "must be >= 1")
        require(EOS_TOKEN in self.special_tokens, f"{prefix}special_tokens",
                f"must include {EOS_TOKEN} (tokenize appends it to every document)")


@dataclass
class TokenizeConfig(Config):
    input: list[str] = field(default_factory=list)
    """Docs directories written by ``data prep``."""
    tokenizer: str = ""
    """Directory holding tokenizer.json (or the path of a tokenizer.json)."""
    output: str = ""
    """Directory that receives shards/*.arrow and manifest.json."""
    val_fraction: float = 0.02
    """Share of documents, chosen by a hash of the document id, that go to the val split."""
    shard_size_bytes: int = 256 * 1024 * 1024
    """A shard is closed once its token buffer reaches this size; it is held in memory until then."""
    batch_size: int = 1000
    """Documents read and encoded per tokenizer batch call."""
    workers: int = 1
    """Processes, each tokenizing whole input parquet files (one task per file)."""

    def check(self, prefix: str) -> None:
        require(bool(self.input), f"{prefix}input", "give at least one docs directory (--input)")
        require(bool(self.tokenizer), f"{prefix}tokenizer", "give the tokenizer directory (--tokenizer)")
        require(bool(self.output), f"{prefix}output", "give an output directory (--output)")
        require(0.0 <= self.val_fraction < 1.0, f"{prefix}val_fraction", "must be in [0, 1)")
        require(0 < self.shard_size_bytes < 1 << 31, f"{prefix}shard_size_bytes",
                "must be in (0, 2 GiB): shards use int32 list offsets")
        require(self.batch_size >= 1, f"{prefix}batch_size", "must be >= 1")
        require(self.workers >= 1, f"{prefix}workers", "must be >= 1")
