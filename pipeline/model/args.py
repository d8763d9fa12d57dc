"""The one shape type: what the transformer, the ladder, HF export/import, checkpoints and the sweep
planner all describe a model with.

Torch-free: configs resolve it (``ModelConfig.args``) and the sweep planner counts N with it before
anything heavy is imported. A ladder rung (``ladder.SIZES``) is a ``ModelArgs`` whose vocabulary and
context are not known yet (0); resolving a config fills them in. The field names are what checkpoints
store as ``meta.json``'s ``model`` (read back as ``ModelArgs(**meta["model"])``), so they stay as they are.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class ModelArgs:
    vocab_size: int = 0
    """Rows of the embedding and the output head; 0 on a ladder rung (the tokenizer decides)."""
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    seq_len: int = 0
    """The context RoPE tables are built for; 0 on a ladder rung (the config decides)."""
    ffn_hidden: int
    """SwiGLU's hidden width: ``ffn_hidden_size(d_model)`` on the ladder, what an imported HF model has."""
    tie_embeddings: bool = True
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def non_embedding_params(self) -> int:
        """N as in Kaplan/Chinchilla: every weight except the embedding and output head."""
        d, kv_dim = self.d_model, self.n_kv_heads * self.head_dim
        attention = d * d * 2 + d * kv_dim * 2  # wq, wo, wk, wv
        mlp = 3 * d * self.ffn_hidden  # w1, w2, w3 of SwiGLU
        norms = 2 * d
        return self.n_layers * (attention + mlp + norms) + d  # + final norm

    def flops_per_token(self) -> float:
        """Training FLOPs per token, forward + backward: 6N + 12·L·d·T (PaLM, Chowdhery et al. 2022,
        appendix B), plus the output head's matmul (6·V·d), which the embedding lookup does not have but
        the head does, tied or not. ``train.mfu.flops_per_token`` by the shape itself, torch-free, for
        the sweep planner's time estimate."""
        n_params = self.non_embedding_params() + self.vocab_size * self.d_model
        return 6 * n_params + 12 * self.n_layers * self.d_model * self.seq_len
