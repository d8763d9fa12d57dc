"""The model size ladder: a table of named shapes (``ModelArgs`` rungs) and their non-embedding N.

Torch-free on purpose: configs validate shapes before anything heavy is imported.
Shapes follow one rule so that every rung is a Llama of the same family: head_dim 64
(32 on the smallest rung, 128 from 7b up as in Llama 2), SwiGLU hidden = 8/3 d_model rounded up
to a multiple of 64, and depth grown with width at an aspect ratio d_model / n_layers
between 32 and 128 (16 layers or fewer below 100M, 24 to 1.3B, 32 to 7B, 40 to 100 above);
grouped-query attention with 8 KV heads from 34b up, as Code Llama 34B and Llama 2 70B have.
The three largest rungs stand for Llama 2 13B, Code Llama 34B and Llama 2 70B, N within 2% of
theirs: ``13b`` is Llama 2 13B's shape (its hidden is already ~8/3 d); ``34b`` is narrower and
deeper than Code Llama 34B (7168 x 64 layers, not 8192 x 48, which is past the aspect ratio);
``70b`` has Llama 2 70B's width and heads, keeps the 8/3 hidden where it widens it to 3.5 d, and
makes up N with depth (100 layers instead of 80).

Each size's default peak learning rate and global batch follow from N by one power law
each (``default_lr``, ``default_batch_tokens``), so a sweep over sizes needs no per-size
tuning; a config's ``train.lr`` / ``train.global_batch_size`` override them.
"""

from __future__ import annotations

import math

from pipeline.model.args import ModelArgs


def ffn_hidden_size(d_model: int, multiple_of: int = 64) -> int:
    """SwiGLU's hidden width: 8/3 d_model keeps its three matrices at the 4 d_model MLP's parameters;
    a multiple of 64 keeps the matmuls on tensor-core tiles."""
    return multiple_of * math.ceil(8 * d_model / 3 / multiple_of)


def rung(d_model: int, n_layers: int, n_heads: int, n_kv_heads: int) -> ModelArgs:
    """A shape of the ladder's family (SwiGLU hidden by ``ffn_hidden_size``), vocabulary and context
    left to the config that resolves it (``ModelConfig.args``)."""
    return ModelArgs(
        d_model=d_model,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        ffn_hidden=ffn_hidden_size(d_model),
    )


# name -> rung(d_model, n_layers, n_heads, n_kv_heads); the name is the approximate N (tests hold each
# within 25% of it).
SIZES: dict[str, ModelArgs] = {
    "tiny": rung(128, 4, 4, 2),  # ~0.8M, CPU tests and demo
    "14m": rung(384, 8, 6, 6),
    "30m": rung(512, 9, 8, 8),
    "60m": rung(640, 12, 10, 10),
    "125m": rung(768, 18, 12, 12),
    "350m": rung(1024, 24, 16, 16),
    "760m": rung(1536, 24, 24, 24),
    "1.3b": rung(2048, 24, 32, 32),
    "3b": rung(2560, 32, 40, 40),
    "7b": rung(4096, 32, 32, 32),
    "13b": rung(5120, 40, 40, 40),  # Llama 2 13B: 12.61B vs its 12.69B
    "34b": rung(7168, 64, 56, 8),  # Code Llama 34B: 33.85B vs its 33.22B
    "70b": rung(8192, 100, 64, 8),  # Llama 2 70B: 68.89B vs its 68.45B (80 layers of a 3.5 d hidden)
}

NOMINAL_PARAMS: dict[str, int] = {
    "tiny": 1_000_000,
    "14m": 14_000_000,
    "30m": 30_000_000,
    "60m": 60_000_000,
    "125m": 125_000_000,
    "350m": 350_000_000,
    "760m": 760_000_000,
    "1.3b": 1_300_000_000,
    "3b": 3_000_000_000,
    "7b": 7_000_000_000,
    "13b": 13_000_000_000,
    "34b": 34_000_000_000,
    "70b": 70_000_000_000,
}


# Both rules are the OLMo model ladder's (allenai/OLMo scripts/ladder.py), fitted by Porian et al. 2024.
_REFERENCE_N = 108_000_000
_REFERENCE_LR = 0.0047
_REFERENCE_BATCH_TOKENS = 160 * 2048
_MIN_RULE_N = 10_000_000
"""The fits span ~100M-7B; below 10M the learning rate is held at its 10M value (on the ~1M rung the
rule's 0.024 did no better than 0.01: val loss 0.57 vs 0.55 after 200 steps, where 3e-3 gave 0.76)."""


def default_lr(non_embedding_params: int) -> float:
    """Peak AdamW learning rate: 0.0047 at N = 108M, scaling as N^(-1/3)."""
    n = max(non_embedding_params, _MIN_RULE_N)
    return _REFERENCE_LR * (n / _REFERENCE_N) ** (-1 / 3)


def default_batch_tokens(non_embedding_params: int) -> int:
    """Global batch in tokens: 160 sequences of 2048 at N = 108M, scaling as N^(2/3)."""
    return round(_REFERENCE_BATCH_TOKENS * (non_embedding_params / _REFERENCE_N) ** (2 / 3))


def default_batch_size(non_embedding_params: int, seq_len: int) -> int:
    """``default_batch_tokens`` as sequences of ``seq_len``, rounded to the nearest 2^k or 3 * 2^k
    (within 20% of the rule, and divisible by every power of two up to a third of it, so that
    micro batch x ranks splits it)."""
    sequences = max(1.0, default_batch_tokens(non_embedding_params) / seq_len)
    exponent = math.floor(math.log2(sequences))
    candidates: list[float] = [2**exponent, 3 * 2 ** (exponent - 1), 2 ** (exponent + 1)]
    nearest = min(candidates, key=lambda c: abs(math.log(c / sequences)))
    return round(nearest)
