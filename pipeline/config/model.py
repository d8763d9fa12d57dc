"""The ``model`` section of a job config: a rung of the ladder, optionally reshaped.

Torch-free so that ``lmpipe`` can reject a bad shape in a fraction of a second. A section is what the
user wrote, not a shape: ``args`` resolves it, once, into the one shape type (``ModelArgs``) that the
model, HF export and the sweep planner share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from pipeline.core.config import Config, require, require_choice
from pipeline.model.args import ModelArgs
from pipeline.model.ladder import SIZES, ffn_hidden_size


@dataclass
class ModelConfig(Config):
    size: str = "tiny"
    """A rung of the ladder (pipeline/model/ladder.py); the fields below override its shape."""
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

    def args(self, *, vocab_size: Optional[int] = None) -> ModelArgs:
        """The resolved shape: this section's ladder rung and overrides, with ``vocab_size`` (the
        tokenizer's), else this section's own, else 0 (not known yet: enough to count N or check the shape).
        Overriding ``n_heads`` alone means no grouped-query attention, not the rung's KV heads."""
        rung = SIZES[self.size]
        n_heads = self.n_heads or rung.n_heads
        d_model = self.d_model or rung.d_model
        return ModelArgs(
            vocab_size=vocab_size if vocab_size is not None else self.vocab_size or 0,
            d_model=d_model,
            n_layers=self.n_layers or rung.n_layers,
            n_heads=n_heads,
            n_kv_heads=self.n_kv_heads or (rung.n_kv_heads if self.n_heads is None else n_heads),
            seq_len=self.seq_len,
            ffn_hidden=ffn_hidden_size(d_model),
            tie_embeddings=self.tie_embeddings,
            rope_theta=self.rope_theta,
            norm_eps=self.norm_eps,
        )

    def check(self, prefix: str) -> None:
        require_choice(self.size, f"{prefix}size", SIZES)
        for key in ("d_model", "n_layers", "n_heads", "n_kv_heads", "vocab_size"):
            value = getattr(self, key)
            require(value is None or value > 0, f"{prefix}{key}", "must be > 0")
        shape = self.args()
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
