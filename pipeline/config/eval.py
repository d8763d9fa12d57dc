"""Configs of the ``eval`` and ``generate`` verbs. Torch-free."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from pipeline.core.config import Config, require


@dataclass
class EvalTrackingConfig(Config):
    """Where ``lmpipe eval`` logs its metrics: the checkpoint's own MLflow run by default."""

    enabled: bool = True
    uri: str = ""
    """Empty: the checkpoint's store, found as its job found it (its config's ``tracking.uri``, else
    $MLFLOW_TRACKING_URI, else sqlite:///<its output dir>/mlflow.db)."""
    new_run: bool = False
    """Log to a new run of ``experiment``, tagged with the checkpoint, rather than to the checkpoint's
    run (a checkpoint whose job had no run always gets a new one)."""
    experiment: str = "eval"


@dataclass
class EvalJobConfig(Config):
    """``lmpipe eval``: a checkpoint's loss, perplexity and bits per byte on token shards or raw text,
    its held-out instruction loss, multiple-choice accuracy; logged to MLflow at the checkpoint's step."""

    checkpoint: str = ""
    shards: str = ""
    """Token shards directory: its ``split`` is scored per manifest source."""
    split: str = "val"
    """Shards only."""
    text: str = ""
    """Raw text instead of shards: a .txt file (one document) or a .jsonl with a ``text`` field per line."""
    name: str = ""
    """Metrics of the shards or text go under ``eval/<name>/``; empty: the split, or the text file's stem."""
    sft: str = ""
    """Fine-tuning data (what ``finetune`` takes as ``data.path``): the loss on the responses of its
    held-out (val) examples."""
    sft_val_fraction: Optional[float] = None
    """The held-out share; None: as the fine-tune that wrote the checkpoint split its data (its other
    ``data`` settings are followed too), else fine-tuning's default."""
    mc: str = ""
    """Multiple-choice JSONL of ``{"context": str, "choices": [str, ...], "answer": int}`` records."""
    batch_size: int = 8
    max_batches: int = 0
    """Per source (shards) or SFT set: at most this many batches, of evenly spaced windows for shards;
    0: all. Raw text is always scored whole, as the harness scores it."""
    stride: int = 0
    """Raw text: the new tokens each rolling window predicts; every window still sees at least
    ``seq_len - stride`` tokens of context (more context, more compute). 0: ``seq_len``, the harness's
    disjoint windows."""
    output: str = ""
    """Also write every result to this JSON file."""
    tracking: EvalTrackingConfig = field(default_factory=EvalTrackingConfig)

    def check(self, prefix: str) -> None:
        require(bool(self.checkpoint), f"{prefix}checkpoint", "give a checkpoint (--checkpoint)")
        require(
            not (self.shards and self.text),
            f"{prefix}text",
            "give token shards (--shards) or raw text (--text), not both",
        )
        require(
            bool(self.shards or self.text or self.sft or self.mc),
            f"{prefix}shards",
            "give something to evaluate on: --shards DIR or --text FILE, and/or --sft FILE, --mc FILE",
        )
        require(
            not self.text or Path(self.text).suffix in (".txt", ".jsonl"),
            f"{prefix}text",
            f"{self.text}: expected a .txt or .jsonl file",
        )
        require(
            self.sft_val_fraction is None or 0.0 < self.sft_val_fraction < 1.0,
            f"{prefix}sft_val_fraction",
            "must be in (0, 1)",
        )
        require(self.batch_size > 0, f"{prefix}batch_size", "must be > 0")
        require(self.max_batches >= 0, f"{prefix}max_batches", "must be >= 0")
        require(self.stride >= 0, f"{prefix}stride", "must be >= 0 (0: seq_len)")


@dataclass
class GenerateJobConfig(Config):
    """``lmpipe generate``: sample completions of prompts from a checkpoint."""

    checkpoint: str = ""
    prompt: Optional[str] = None
    """One prompt ("" starts from EOS, a document boundary); give this or ``prompts``."""
    prompts: str = ""
    """A file of prompts: .txt, one per non-empty line, or .jsonl, each record's ``prompt`` or, with
    ``chat``, its conversation so far (``messages`` as fine-tuning data has them, ending in a user turn)."""
    output: str = ""
    """Write {"prompt", "completion"} records (or {"messages", "completion"}) here as JSONL."""
    max_new_tokens: int = 64
    temperature: float = 0.8
    """0: greedy (top_k and top_p then do nothing)."""
    top_k: int = 50
    """Sample among the k most probable tokens; 0: all."""
    top_p: float = 1.0
    """Then among the smallest set of them whose probabilities sum to >= top_p (nucleus); 1: all."""
    stop: list[str] = field(default_factory=list)
    """A completion ends just before the first of these strings (and at EOS)."""
    seed: int = 0
    batch_size: int = 8
    """Prompts sampled together (left-padded, one KV cache)."""
    chat: bool = False
    """Wrap each prompt as a fine-tuning user turn (<|user|> prompt <|assistant|>); return only the reply."""
    system: str = ""
    """With ``chat``: a system message before each prompt (a conversation that has its own keeps that)."""

    def check(self, prefix: str) -> None:
        require(bool(self.checkpoint), f"{prefix}checkpoint", "give a checkpoint (--checkpoint)")
        require(
            self.prompt is not None or bool(self.prompts),
            f"{prefix}prompt",
            "give a prompt (--prompt) or a prompts file (--prompts)",
        )
        require(
            self.prompt is None or not self.prompts,
            f"{prefix}prompt",
            "give a prompt (--prompt) or a prompts file (--prompts), not both",
        )
        require(self.max_new_tokens > 0, f"{prefix}max_new_tokens", "must be > 0")
        require(self.temperature >= 0.0, f"{prefix}temperature", "must be >= 0 (0: greedy)")
        require(self.top_k >= 0, f"{prefix}top_k", "must be >= 0 (0: no top-k)")
        require(0.0 < self.top_p <= 1.0, f"{prefix}top_p", "must be in (0, 1] (1: no nucleus)")
        require(all(self.stop), f"{prefix}stop", "stop strings must not be empty")
        require(self.chat or not self.system, f"{prefix}system", "a system message needs chat mode (--chat)")
        require(self.batch_size > 0, f"{prefix}batch_size", "must be > 0")
