"""Configs of ``lmpipe data train-tokenizer`` and ``lmpipe data tokenize``."""

from __future__ import annotations

from dataclasses import dataclass, field

from data_prep.config import EXECUTORS
from launch.slurm.profile import SlurmArrayProfile
from pipeline.core.config import Config, require, require_choice

SPECIAL_TOKENS = ["<|bos|>", "<|eos|>", "<|pad|>", "<|user|>", "<|assistant|>"]
BOS_TOKEN, EOS_TOKEN, PAD_TOKEN = SPECIAL_TOKENS[:3]


@dataclass
class TokenizerTrainConfig(Config):
    input: str = ""
    """A docs directory written by ``data prep`` (its docs/*.parquet)."""
    output: str = ""
    """Directory that receives tokenizer.json, tokenizer_config.json and special_tokens_map.json."""
    vocab_size: int = 8192
    min_frequency: int = 2
    max_bytes: int = 200_000_000
    """Stop feeding text to the trainer after this many bytes (a sample is enough)."""
    special_tokens: list[str] = field(default_factory=lambda: list(SPECIAL_TOKENS))
    """Added first, in this order (ids 0, 1, ...); those not named below are the chat markers."""
    bos_token: str = BOS_TOKEN
    """Role written to tokenizer_config.json for ``transformers``; empty = none."""
    eos_token: str = EOS_TOKEN
    """Appended to every document by ``data tokenize``."""
    pad_token: str = PAD_TOKEN
    """Role written to tokenizer_config.json; empty = none."""

    def check(self, prefix: str) -> None:
        require(bool(self.input), f"{prefix}input", "give the docs directory (--input)")
        require(bool(self.output), f"{prefix}output", "give an output directory (--output)")
        require(
            256 + len(self.special_tokens) < self.vocab_size <= 4_294_967_295,
            f"{prefix}vocab_size",
            "must exceed 256 byte tokens plus the special tokens",
        )
        require(self.max_bytes > 0, f"{prefix}max_bytes", "must be > 0")
        require(self.min_frequency >= 1, f"{prefix}min_frequency", "must be >= 1")
        require(
            self.eos_token in self.special_tokens,
            f"{prefix}special_tokens",
            f"must include eos_token {self.eos_token!r} (tokenize appends it to every document)",
        )
        for role in ("bos_token", "pad_token"):
            token = getattr(self, role)
            require(
                not token or token in self.special_tokens,
                f"{prefix}{role}",
                f"{token!r} is not one of special_tokens",
            )

    @property
    def roles(self) -> dict[str, str]:
        """``{"bos_token": ..., "eos_token": ..., "pad_token": ...}`` for the roles that are set."""
        return {
            role: token for role in ("bos_token", "eos_token", "pad_token") if (token := getattr(self, role))
        }

    @property
    def chat_tokens(self) -> list[str]:
        """Special tokens without a role: the fine-tuning chat markers."""
        return [token for token in self.special_tokens if token not in self.roles.values()]


@dataclass
class TokenizeConfig(Config):
    input: list[str] = field(default_factory=list)
    """Docs directories written by ``data prep``."""
    tokenizer: str = ""
    """Directory holding tokenizer.json (or the path of a tokenizer.json): ours or e.g. a GPT-2/Llama one."""
    output: str = ""
    """Directory that receives shards/*.arrow and manifest.json."""
    eos_token: str = ""
    """Token appended to every document; empty = the tokenizer_config.json beside the tokenizer says,
    else the first of <|eos|>, <|endoftext|>, <|end_of_text|>, </s>, <eos> the vocabulary has."""
    bos_token: str = ""
    """Recorded in the manifest only (no BOS is added); empty = found like eos_token, or none."""
    val_fraction: float = 0.02
    """Share of documents, chosen by a hash of the document id, that go to the val split."""
    shard_size_bytes: int = 256 * 1024 * 1024
    """A shard is closed once its token buffer reaches this size; it is held in memory until then."""
    batch_size: int = 1000
    """Documents read and encoded per tokenizer batch call."""
    workers: int = 1
    """Processes, each tokenizing whole input parquet files (one task per file; executor local)."""
    executor: str = "local"
    """local: this machine (``workers`` processes); slurm: a Slurm job array, one element per file."""
    slurm: SlurmArrayProfile = field(default_factory=SlurmArrayProfile)

    def check(self, prefix: str) -> None:
        require(bool(self.input), f"{prefix}input", "give at least one docs directory (--input)")
        require(bool(self.tokenizer), f"{prefix}tokenizer", "give the tokenizer directory (--tokenizer)")
        require(bool(self.output), f"{prefix}output", "give an output directory (--output)")
        require(0.0 <= self.val_fraction < 1.0, f"{prefix}val_fraction", "must be in [0, 1)")
        require(
            0 < self.shard_size_bytes < 1 << 31,
            f"{prefix}shard_size_bytes",
            "must be in (0, 2 GiB): shards use int32 list offsets",
        )
        require(self.batch_size >= 1, f"{prefix}batch_size", "must be >= 1")
        require(self.workers >= 1, f"{prefix}workers", "must be >= 1")
        require_choice(self.executor, f"{prefix}executor", EXECUTORS)
