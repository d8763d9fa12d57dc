"""The ``model`` section of a job config: a rung of the ladder, optionally reshaped.

Torch-free so that ``lmpipe`` can reject a bad shape in a fraction of a second; ``args``
resolves it once into the one shape type the model, HF export and the sweep planner share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from pipeline.core.config import Config, require, require_choice
from pipeline.model.args import ModelArgs
from pipeline.model.ladder import SIZES, ModelShape, ffn_hidden_size


@dataclass
class ModelConfig(Config):
    size: str = "tiny"
    """A rung of the ladder (pipeline/ladder.py); the fields below override its shape."""
    d_model: Optional[int] = None
    n_layers: Optional[int] = None
    n_heads: Optional[int] = None
    n_kv_heads: Optional[int] = None
    vocab_size: Optional[int] = None
    """None: taken from the token shards' manifest."""
    seq_len: int = 256
    tie_embeddings: bool = True
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5

    def shape(self) -> ModelShape:
        base = SIZES[self.size]
        n_heads = self.n_heads or base.n_heads
        return ModelShape(
            d_model=self.d_model or base.d_model,
            n_layers=self.n_layers or base.n_layers,
            n_heads=n_heads,
            n_kv_heads=self.n_kv_heads or (base.n_kv_heads if self.n_heads is None else n_heads),
        )

    def check(self, prefix: str) -> None:
        require_choice(self.size, f"{prefix}size", SIZES)
        shape = self.shape()
        for key in ("d_model", "n_layers", "n_heads", "n_kv_heads", "vocab_size"):
            value = getattr(self, key)
            require(value is None or value > 0, f"{prefix}{key}", "must be > 0")
        require(
            shape.d_model % shape.n_heads == 0,
            f"{prefix}n_heads",
            f"{shape.n_heads} does not divide d_model={shape.d_model}",
        )
        require(shape.head_dim % 2 == 0, f"{prefix}n_heads", "d_model / n_heads must be even for RoPE")
        require(
            shape.n_heads % shape.n_kv_heads == 0,
            f"{prefix}n_kv_heads",
            f"{shape.n_kv_heads} does not divide n_heads={shape.n_heads}",
        )
        require(self.seq_len > 0, f"{prefix}seq_len", "must be > 0")

    def args(self, *, vocab_size: int) -> ModelArgs:
        """The resolved shape: this section's ladder rung and overrides, with the tokenizer's vocabulary."""
        shape = self.shape()
        return ModelArgs(
            vocab_size=vocab_size,
            d_model=shape.d_model,
            n_layers=shape.n_layers,
            n_heads=shape.n_heads,
            n_kv_heads=shape.n_kv_heads,
            seq_len=self.seq_len,
            ffn_hidden=ffn_hidden_size(shape.d_model),
            tie_embeddings=self.tie_embeddings,
            rope_theta=self.rope_theta,
            norm_eps=self.norm_eps,
        )
