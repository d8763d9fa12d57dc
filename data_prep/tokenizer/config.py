"""Configs of ``lmpipe data train-tokenizer`` and ``lmpipe data tokenize``."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.config import Config, require

SPECIAL_TOKENS = ["<|bos|>", "<|eos|>", "<|pad|>", "<|user|>", "<|assistant|>"]


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
    batch_size: int = 1000
    workers: int = 1

    def check(self, prefix: str) -> None:
        require(bool(self.input), f"{prefix}input", "give at least one docs directory (--input)")
        require(bool(self.tokenizer), f"{prefix}tokenizer", "give the tokenizer directory (--tokenizer)")
        require(bool(self.output), f"{prefix}output", "give an output directory (--output)")
        require(0.0 <= self.val_fraction < 1.0, f"{prefix}val_fraction", "must be in [0, 1)")
        require(self.shard_size_bytes > 0, f"{prefix}shard_size_bytes", "must be > 0")
        require(self.workers >= 1, f"{prefix}workers", "must be >= 1")
