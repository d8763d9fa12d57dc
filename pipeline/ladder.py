"""The model size ladder: named shapes and their non-embedding parameter count N.

Torch-free on purpose: configs validate shapes before anything heavy is imported.
Shapes follow one rule so that every rung is a Llama of the same family: head_dim 64
(32 on the smallest rung), SwiGLU hidden = 8/3 d_model rounded up to a multiple of 64,
and depth grown with width at an aspect ratio d_model / n_layers between 32 and 128.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelShape:
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def ffn_hidden(self) -> int:
        return ffn_hidden_size(self.d_model)

    def non_embedding_params(self) -> int:
        """N as in Kaplan/Chinchilla: every weight except the embedding and output head."""
        d, kv_dim = self.d_model, self.n_kv_heads * self.head_dim
        attention = d * d * 2 + d * kv_dim * 2  # wq, wo, wk, wv
        mlp = 3 * d * self.ffn_hidden  # w1, w2, w3 of SwiGLU
        norms = 2 * d
        return self.n_layers * (attention + mlp + norms) + d  # + final norm


def ffn_hidden_size(d_model: int, multiple_of: int = 64) -> int:
    return multiple_of * math.ceil(8 * d_model / 3 / multiple_of)


# name -> shape; the name is the approximate N (tests hold each within 25% of it).
SIZES: dict[str, ModelShape] = {
    "tiny": ModelShape(d_model=128, n_layers=4, n_heads=4, n_kv_heads=2),  # ~0.8M, CPU tests and demo
    "14m": ModelShape(d_model=384, n_layers=8, n_heads=6, n_kv_heads=6),
    "30m": ModelShape(d_model=512, n_layers=9, n_heads=8, n_kv_heads=8),
    "60m": ModelShape(d_model=640, n_layers=12, n_heads=10, n_kv_heads=10),
    "125m": ModelShape(d_model=768, n_layers=18, n_heads=12, n_kv_heads=12),
}

NOMINAL_PARAMS: dict[str, int] = {"tiny": 1_000_000, "14m": 14_000_000, "30m": 30_000_000,
                                  "60m": 60_000_000, "125m": 125_000_000}
