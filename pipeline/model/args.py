"""The resolved shape of one model: what the transformer, HF export and checkpoints are built from.

Torch-free: configs resolve it (``ModelConfig.args``) before anything heavy is imported.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ModelArgs:
    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    seq_len: int
    ffn_hidden: int
    tie_embeddings: bool = True
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads
