"""A Llama-style decoder in plain PyTorch: RMSNorm, RoPE, grouped-query attention, SwiGLU.

The model knows nothing of parallelism: ``pipeline.parallel`` wraps or shards it from outside. The
output head fused with the loss is ``loss.py``'s, the KV cache and sampling ``generation.py``'s.
Build it on the ``meta`` device (no memory, no init cost), let the strategy place it,
then ``to_empty(device=...)`` and ``init_weights()`` (TorchTitan's order)::

    with torch.device("meta"):
        model = Transformer(args)
    model.to_empty(device="cpu")
    model.init_weights()

Weight names and the rotary convention (rotate-half, as in ``transformers``' Llama)
are chosen so that an export to ``LlamaForCausalLM`` is a renaming, no permutation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.flex_attention import BlockMask
from torch.utils.checkpoint import checkpoint

from pipeline.model.args import ModelArgs
from pipeline.model.attention_mask import (
    AttentionMask,
    attention_mask,
    flex_document_attention,
)
from pipeline.model.generation import KVCache, LayerCache, sample_next
from pipeline.model.init import full_parameter
from pipeline.model.loss import OutputHead


def rope_tables(
    args: ModelArgs, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of every (position, frequency) pair, each (seq_len, head_dim)."""
    half = args.head_dim // 2
    inv_freq = 1.0 / (args.rope_theta ** (torch.arange(0, half, device=device, dtype=torch.float32) / half))
    angles = torch.outer(torch.arange(args.seq_len, device=device, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)  # rotate-half layout: frequency i drives dims i and i + half
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, H, T, hd) query or key vectors by their position."""
    first, second = x.chunk(2, dim=-1)
    rotated = torch.cat([-second, first], dim=-1)
    return x * cos + rotated * sin


CAUSAL_QUERY_BLOCK = 64
"""Queries per SDPA call in causal attention on the CPU (``causal_attention``)."""


def causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttentionMask | None = None
) -> torch.Tensor:
    """Causal SDPA of q (B, H, T, hd) over k, v (B, KV, T, hd), returned as (B, T, H, hd); with ``mask``
    (``attention_mask``: causal itself) only where it allows.

    A ``BlockMask`` goes to flex attention, which skips the tiles it masks whole. On the CPU, one block of
    queries at a time against only the keys up to the block's last position: at T = 256 the CPU kernel
    scores every query against all T keys and masks half of them away, so skipping the keys after each
    block saves 10-20% of the attention's time (fwd + bwd, ``tiny`` and ``14m``), packed fine-tuning
    batches included. Elsewhere one call: CUDA's flash kernels skip the masked blocks of causal attention
    themselves."""
    if isinstance(mask, BlockMask):
        return flex_document_attention(q, k, v, mask)
    if q.device.type != "cpu":
        if mask is not None:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True).transpose(1, 2)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True).transpose(1, 2)
    T = q.shape[2]
    blocks = []
    for start in range(0, T, CAUSAL_QUERY_BLOCK):
        end = min(start + CAUSAL_QUERY_BLOCK, T)
        if mask is None:
            visible = torch.ones(end - start, end, dtype=torch.bool, device=q.device).tril(
                start
            )  # key <= query
        else:
            visible = mask[:, :, start:end, :end].contiguous()  # a strided mask sends SDPA to a slow path
        y = F.scaled_dot_product_attention(
            q[:, :, start:end], k[:, :, :end], v[:, :, :end], attn_mask=visible, enable_gqa=True
        )
        blocks.append(y.transpose(1, 2))
    return torch.cat(blocks, dim=1)


class Attention(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.head_dim = args.head_dim
        self.wq = nn.Linear(args.d_model, args.n_heads * args.head_dim, bias=False)
        self.wk = nn.Linear(args.d_model, args.n_kv_heads * args.head_dim, bias=False)
        self.wv = nn.Linear(args.d_model, args.n_kv_heads * args.head_dim, bias=False)
        self.wo = nn.Linear(args.n_heads * args.head_dim, args.d_model, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: AttentionMask | None = None,
        cache: LayerCache | None = None,
    ) -> torch.Tensor:
        """Causal self-attention; with ``mask`` (``attention_mask``) only where it allows.
        With ``cache`` (generation) also over the cached keys: then ``mask`` is dense (B, 1, T, start + T)."""
        B, T, _ = x.shape
        # Head counts from the projections' widths: tensor parallelism leaves each rank a share of the heads.
        q = self.wq(x).view(B, T, -1, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k = self.wk(x).view(B, T, -1, self.head_dim).transpose(1, 2)  # (B, KV, T, hd)
        v = self.wv(x).view(B, T, -1, self.head_dim).transpose(1, 2)  # (B, KV, T, hd)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(k, v)
        # enable_gqa: each key/value head serves n_heads / n_kv_heads consecutive query heads
        if cache is None:
            y = causal_attention(q, k, v, mask)  # (B, T, H, hd)
        else:  # generation: queries at the cache's end; the mask (if any) covers the cached keys too
            assert not isinstance(mask, BlockMask), "forward_cached builds dense masks"
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True).transpose(1, 2)
        return self.wo(y.reshape(B, T, -1))


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.w1 = nn.Linear(args.d_model, args.ffn_hidden, bias=False)  # gate
        self.w3 = nn.Linear(args.d_model, args.ffn_hidden, bias=False)  # up
        self.w2 = nn.Linear(args.ffn_hidden, args.d_model, bias=False)  # down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.attention_norm = nn.RMSNorm(args.d_model, eps=args.norm_eps)
        self.attention = Attention(args)
        self.ffn_norm = nn.RMSNorm(args.d_model, eps=args.norm_eps)
        self.feed_forward = FeedForward(args)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: AttentionMask | None = None,
        cache: LayerCache | None = None,
    ) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), cos, sin, mask, cache)
        return x + self.feed_forward(self.ffn_norm(x))


class Transformer(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        if args.vocab_size <= 0 or args.seq_len <= 0:  # a bare ladder rung: nothing to embed or rotate
            raise ValueError(f"{args} has no vocabulary or context; resolve it with ModelConfig.args")
        self.args = args
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.d_model)
        self.layers = nn.ModuleList(Block(args) for _ in range(args.n_layers))
        self.norm = nn.RMSNorm(args.d_model, eps=args.norm_eps)
        self.output = OutputHead(args.d_model, args.vocab_size)
        self.tie_weights()
        # Derived from args, so not saved in checkpoints; init_weights fills them after to_empty.
        cos, sin = rope_tables(args)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def tie_weights(self) -> None:
        """Share the embedding with the output head (``to_empty`` makes new tensors: call it again after)."""
        if self.args.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight

    @torch.no_grad()
    def init_weights(self, seed: int | None = None) -> None:
        """Every parameter (adapters included) drawn by its rule from its own generator (``model.init``),
        and the RoPE tables filled. ``seed`` None: the one given ``torch.manual_seed``. For a model whose
        parameters are plain tensors; a sharded one is ``pipeline.parallel.init``'s."""
        self.tie_weights()
        seed = torch.initial_seed() if seed is None else seed
        for name, param in self.named_parameters():  # a tied head is listed once, as tok_embeddings.weight
            param.copy_(full_parameter(name, param.shape, seed=seed, n_layers=self.args.n_layers))
        self.rope_cos, self.rope_sin = rope_tables(self.args, device=self.tok_embeddings.weight.device)

    def forward(
        self,
        tokens: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        reduction: str = "mean",
        doc_starts: torch.Tensor | Sequence | None = None,
    ) -> torch.Tensor | tuple[None, torch.Tensor]:
        """Logits (B, T, vocab); with ``targets`` (None, the cross-entropy over targets != IGNORE_INDEX):
        the head and loss are fused and chunked (``linear_cross_entropy``), so no (B, T, vocab) logits
        are made, nor held through backward and the optimizer step. The pair keeps the place of the
        logits for the strategies' and loops' ``_, loss = model(...)``.

        ``reduction="sum"`` lets the training loop normalise by the target count of the whole
        global batch, so accumulation and data parallelism weigh every target token equally.
        ``doc_starts`` (per row, where documents begin; ``document_mask``) keeps attention within each
        document as well as causal (one mask, built here for every layer: ``attention_mask``); without it,
        plain causal attention. RoPE positions stay absolute within the window, not document-relative (a
        document's logits depend on where it starts).
        """
        T = tokens.shape[1]
        if T > self.args.seq_len:
            raise ValueError(f"sequence of {T} tokens is longer than the model's seq_len {self.args.seq_len}")
        x = self.tok_embeddings(tokens)  # (B, T, d)
        cos, sin = self.rope_cos[:T].to(x.dtype), self.rope_sin[:T].to(x.dtype)
        mask = None if doc_starts is None else attention_mask(doc_starts, (tokens.shape[0], T), tokens.device)
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        if targets is None:
            return self.output(self.norm(x))  # (B, T, vocab)
        return None, self.output(self.norm(x), targets, reduction=reduction)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; non-embedding (N of the scaling laws) leaves out the embedding and output head."""
        total = sum(p.numel() for p in self.parameters())  # a tied head is one tensor, counted once
        if non_embedding:
            total -= self.tok_embeddings.weight.numel()
            if not self.args.tie_embeddings:
                total -= self.output.weight.numel()
        return total

    @torch.no_grad()
    def generate(
        self,
        tokens: torch.Tensor,
        max_new_tokens: int,
        *,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        eos_id: int | None = None,
        generator: torch.Generator | None = None,
        valid: torch.Tensor | None = None,
        finished: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Extend (B, T) ``tokens`` by up to ``max_new_tokens`` sampled ones (``sample_next``), returned
        whole.

        A KV cache: the prompts go through in one pass, then one token per step. Prompts of unequal
        length come left-padded, ``valid`` (B, T) False on the padding: padding is never attended to,
        and each row's RoPE positions count only its own tokens, so a row generates what it would alone.
        Past the model's ``seq_len`` the window slides and every step reruns it (positions shift, so
        nothing cached stays valid). Stops early once every row has produced ``eos_id`` or been
        declared done by ``finished`` (the tokens generated so far (B, n) -> (B,) bool, e.g. stop strings).
        Prompts, ``valid`` and ``finished``'s answers may come from the host: they are moved to the model's
        device, where the result is (``generator`` must be on it too: ``sampling_generator``).
        """
        B, T = tokens.shape
        device = self.tok_embeddings.weight.device
        out = tokens.new_empty(B, T + max_new_tokens, device=device)
        out[:, :T] = tokens
        valid = torch.ones_like(out[:, :T], dtype=torch.bool) if valid is None else valid.to(device)
        valid = torch.cat([valid, valid.new_ones(B, max_new_tokens)], dim=1)  # every generated token is real
        done = torch.zeros(B, dtype=torch.bool, device=device)
        seq_len = self.args.seq_len
        cache = self.new_cache(B, min(seq_len, T + max_new_tokens))
        n = T
        for _ in range(max_new_tokens):
            if n <= cache.capacity:
                logits = self.forward_cached(out[:, cache.length : n], cache, valid[:, :n])
            else:
                window = slice(n - seq_len, n)
                logits = self.forward_cached(out[:, window], self.new_cache(B, seq_len), valid[:, window])
            next_token = sample_next(
                logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator
            )
            out[:, n] = next_token
            n += 1
            if eos_id is not None:
                done |= next_token == eos_id
            if finished is not None:
                done |= finished(out[:, T:n]).to(device)
            if (eos_id is not None or finished is not None) and done.all():
                break
        return out[:, :n]

    def new_cache(self, batch: int, capacity: int) -> KVCache:
        weight = self.tok_embeddings.weight
        return KVCache(self.args, batch, capacity, device=weight.device, dtype=weight.dtype)

    def forward_cached(self, tokens: torch.Tensor, cache: KVCache, valid: torch.Tensor) -> torch.Tensor:
        """Logits (B, vocab) of the last of (B, T) ``tokens``, which follow the ``cache.length`` cached ones;
        ``valid`` (B, cache.length + T): False where a slot is padding."""
        T = tokens.shape[1]
        start, end = cache.length, cache.length + T
        positions = (valid.cumsum(dim=1) - 1).clamp(min=0)[:, start:end]  # (B, T): padding does not count
        cos, sin = self.rope_cos[positions][:, None], self.rope_sin[positions][:, None]  # (B, 1, T, hd)
        visible = valid[:, None, None, :]  # (B, 1, 1, end)
        if T > 1:
            query = torch.arange(start, end, device=tokens.device)[:, None]
            key = torch.arange(end, device=tokens.device)
            # causal over real keys; a padding query sees itself too, else its softmax would be over nothing
            visible = (visible & (key <= query)) | (key == query)  # (B, 1, T, end)
        x = self.tok_embeddings(tokens)  # (B, T, d)
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, visible, cache.layer(i))
        cache.length = end
        return self.output(self.norm(x[:, -1]))  # (B, vocab)


def checkpoint_blocks(model: Transformer) -> None:
    """Recompute each block's activations in backward instead of keeping them (non-reentrant
    ``torch.utils.checkpoint``): a block then holds only its input until backward. Each block's
    ``forward`` is replaced in place, so parameter names (checkpoints, export) and the module tree
    that a parallel strategy wraps or shards per block stay the plain model's."""
    for block in model.layers:
        block.forward = functools.partial(_checkpointed, block.forward)


def _checkpointed(forward: Callable[..., torch.Tensor], *args: torch.Tensor) -> torch.Tensor:
    # A frame of its own, not a partial of ``checkpoint``: torch.compile traces this one (and turns the
    # checkpoint into its higher-order op), whereas a bare ``checkpoint`` call would be skipped as eager.
    return checkpoint(forward, *args, use_reentrant=False)


def build_model(args: ModelArgs, *, device: torch.device | str = "meta") -> Transformer:
    """The model on ``device``; on ``meta`` (the default) it holds no memory until ``to_empty``."""
    with torch.device(device):
        return Transformer(args)


def empty_model(args: ModelArgs, *, device: torch.device | str) -> Transformer:
    """The model on ``device`` with uninitialised weights and its head tied: a target to load weights into
    (``to_empty`` makes every tensor anew, so the tie is made again after it)."""
    model = build_model(args)
    model.to_empty(device=device)
    model.tie_weights()
    return model
