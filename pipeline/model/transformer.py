"""A Llama-style decoder in plain PyTorch: RMSNorm, RoPE, grouped-query attention, SwiGLU.

The model knows nothing of parallelism: ``parallel.py`` wraps or shards it from outside.
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
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from pipeline.model.args import ModelArgs

IGNORE_INDEX = -100
"""Targets with this value add nothing to the loss (prompt and padding positions in SFT)."""

LOSS_CHUNK_LOGITS = 1 << 21
"""Logits per chunk of the fused head + loss in fp32 on the CPU (8 MiB): small enough to stay in cache
from the matmul that makes them, through the softmax, to the two matmuls of the gradient."""


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


def doc_starts_indicator(
    doc_starts: torch.Tensor | Sequence, shape: tuple[int, int], device: torch.device | str | None = None
) -> torch.Tensor:
    """``doc_starts`` (see ``document_mask``) as a (B, T) boolean tensor on ``device``."""
    B, T = shape
    if isinstance(doc_starts, torch.Tensor) and doc_starts.dtype == torch.bool:
        if tuple(doc_starts.shape) != (B, T):
            raise ValueError(
                f"doc_starts of shape {tuple(doc_starts.shape)} does not match the tokens' {(B, T)}"
            )
        return doc_starts.to(device) if device is not None else doc_starts
    if len(doc_starts) != B:
        raise ValueError(f"doc_starts has {len(doc_starts)} rows for a batch of {B}")
    starts = torch.zeros(B, T, dtype=torch.bool)
    for row, positions in enumerate(doc_starts):
        starts[row, torch.as_tensor(positions, dtype=torch.long)] = True
    return starts.to(device) if device is not None else starts


def document_mask(
    doc_starts: torch.Tensor | Sequence, shape: tuple[int, int], device: torch.device | str | None = None
) -> torch.Tensor:
    """The (B, 1, T, T) boolean attention mask, True = attend: causal and within one document.

    ``doc_starts`` is per row the input positions where a document begins (``TokenLoader(doc_starts=True)``'s
    third item: B 1-D int arrays or tensors), or a (B, T) boolean tensor marking them. Positions before a
    row's first start (a document cut by the window) form a document of their own.
    """
    T = shape[1]
    starts = doc_starts_indicator(doc_starts, shape, device)
    doc_id = starts.cumsum(dim=1)  # (B, T): the document each position belongs to
    causal = torch.ones(T, T, dtype=torch.bool, device=starts.device).tril()
    return (causal & (doc_id[:, :, None] == doc_id[:, None, :]))[:, None]  # (B, 1, T, T)


CAUSAL_QUERY_BLOCK = 64
"""Queries per SDPA call in causal attention on the CPU (``causal_attention``)."""


def causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Causal SDPA of q (B, H, T, hd) over k, v (B, KV, T, hd), returned as (B, T, H, hd); with ``mask``
    ((B, 1, T, T) bool, causal itself: ``document_mask``) only where it is True.

    On the CPU, one block of queries at a time against only the keys up to the block's last position:
    at T = 256 the CPU kernel scores every query against all T keys and masks half of them away, so
    skipping the keys after each block saves 10-20% of the attention's time (fwd + bwd, ``tiny`` and
    ``14m``), packed fine-tuning batches included. Elsewhere one call: CUDA's flash kernels skip the
    masked blocks themselves."""
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


class LayerCache(NamedTuple):
    """One layer's slice of a ``KVCache``: where this forward's keys and values go (slots from ``start``)."""

    keys: torch.Tensor  # (B, KV, capacity, hd)
    values: torch.Tensor  # (B, KV, capacity, hd)
    start: int

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, KV, T, hd) and return every key and value so far, (B, KV, start + T, hd)."""
        end = self.start + k.shape[2]
        self.keys[:, :, self.start : end] = k
        self.values[:, :, self.start : end] = v
        return self.keys[:, :, :end], self.values[:, :, :end]


class KVCache:
    """Keys and values of every layer for generation, preallocated: (B, KV, capacity, hd) per layer, filled
    left to right, ``length`` slots so far. Rows of unequal prompts are left-padded (``Transformer.generate``)."""

    def __init__(
        self, args: ModelArgs, batch: int, capacity: int, *, device: torch.device, dtype: torch.dtype
    ):
        shape = (batch, args.n_kv_heads, capacity, args.head_dim)
        self.keys = [torch.empty(shape, device=device, dtype=dtype) for _ in range(args.n_layers)]
        self.values = [torch.empty(shape, device=device, dtype=dtype) for _ in range(args.n_layers)]
        self.capacity = capacity
        self.length = 0

    def layer(self, i: int) -> LayerCache:
        return LayerCache(self.keys[i], self.values[i], self.length)


class Attention(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = args.n_heads, args.n_kv_heads, args.head_dim
        self.wq = nn.Linear(args.d_model, args.n_heads * args.head_dim, bias=False)
        self.wk = nn.Linear(args.d_model, args.n_kv_heads * args.head_dim, bias=False)
        self.wv = nn.Linear(args.d_model, args.n_kv_heads * args.head_dim, bias=False)
        self.wo = nn.Linear(args.n_heads * args.head_dim, args.d_model, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None = None,
        cache: LayerCache | None = None,
    ) -> torch.Tensor:
        """Causal self-attention; with ``mask`` ((B, 1, T, T) bool, ``document_mask``) only where it is True.
        With ``cache`` (generation) also over the cached keys: then ``mask`` is (B, 1, T, start + T)."""
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k = self.wk(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, KV, T, hd)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, KV, T, hd)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(k, v)
        # enable_gqa: each key/value head serves n_heads / n_kv_heads consecutive query heads
        if cache is None:
            y = causal_attention(q, k, v, mask)  # (B, T, H, hd)
        else:  # generation: queries at the cache's end; the mask (if any) covers the cached keys too
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
        mask: torch.Tensor | None = None,
        cache: LayerCache | None = None,
    ) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), cos, sin, mask, cache)
        return x + self.feed_forward(self.ffn_norm(x))


class _LinearCrossEntropy(torch.autograd.Function):
    """Logits and the cross-entropy, with the loss's gradients computed in the forward pass, chunk by
    chunk of rows (as Liger-Kernel's fused linear cross-entropy). Unfused, a step writes the (tokens, vocab)
    logits, their log-softmax (kept for backward), a zero-filled gradient of that size and the
    log-softmax's backward: on the CPU at our sizes that memory traffic adds about half the time of the
    head's three matmuls. Fused, each chunk's softmax minus its one-hot targets, the gradient of its
    logits, goes at once into the gradients of ``x`` and ``weight`` while the chunk is in cache; backward
    only scales them by the loss's gradient, exact since the loss is a scalar. The logits carry no gradient."""

    @staticmethod
    def forward(
        ctx, x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, reduction: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, d) and weight (V, d) in the compute dtype, targets (N,) -> logits (N, V), loss ()."""
        with torch.autocast(x.device.type, enabled=False):  # the caller chose the dtype; softmax in fp32
            logits, loss, grad_x, grad_weight = _linear_cross_entropy(
                x,
                weight,
                targets,
                reduction=reduction,
                grad_x=ctx.needs_input_grad[0],
                grad_weight=ctx.needs_input_grad[1],
            )
        ctx.mark_non_differentiable(logits)
        ctx.set_materialize_grads(
            False
        )  # no zero-filled (N, V) gradient for the logits, which backward ignores
        ctx.save_for_backward(grad_x, grad_weight)
        return logits, loss

    @staticmethod
    def backward(
        ctx, _grad_logits: None, grad_loss: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        grad_x, grad_weight = ctx.saved_tensors
        return (
            None if grad_x is None else grad_x * grad_loss,
            None if grad_weight is None else grad_weight * grad_loss,
            None,
            None,
        )


def _loss_chunk_rows(x: torch.Tensor, vocab: int) -> int:
    """Rows per chunk: ``LOSS_CHUNK_LOGITS`` logits in fp32 on the CPU. Elsewhere every row in one chunk, so
    the weight gradient stays one matmul rather than a sum rounded per chunk in low precision."""
    if x.device.type == "cpu" and x.dtype == torch.float32:
        return max(1, LOSS_CHUNK_LOGITS // vocab)
    return x.shape[0]


def _linear_cross_entropy(
    x: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    reduction: str,
    grad_x: bool,
    grad_weight: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Logits (N, V), the loss, and its gradients with respect to ``x`` and ``weight`` (None where not asked)."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', not {reduction!r}")
    valid = targets != IGNORE_INDEX
    target_ids = targets.masked_fill(~valid, 0)[:, None]  # (N, 1); an ignored row's id is arbitrary: weight 0
    row_weight = valid.float()  # each row's share of the loss: 1 per counted target, / their count for "mean"
    if reduction == "mean":
        row_weight /= valid.sum()
    logits = x.new_empty(x.shape[0], weight.shape[0])
    row_loss = torch.empty(x.shape[0], dtype=torch.float32, device=x.device)
    dx = torch.empty_like(x) if grad_x else None
    dw = torch.zeros_like(weight) if grad_weight else None
    chunk = _loss_chunk_rows(x, weight.shape[0])
    for rows in (slice(start, start + chunk) for start in range(0, x.shape[0], chunk)):
        log_probs = torch.log_softmax(
            torch.mm(x[rows], weight.t(), out=logits[rows]).float(), dim=1
        )  # (n, V)
        row_loss[rows] = -log_probs.gather(1, target_ids[rows]).squeeze(1)
        if dx is None and dw is None:
            continue
        # d loss / d logits: (softmax - one-hot target), times the row's share of the loss
        grad_logits = log_probs.exp_().mul_(row_weight[rows, None])
        grad_logits = grad_logits.scatter_add_(1, target_ids[rows], -row_weight[rows, None]).to(x.dtype)
        if dx is not None:
            torch.mm(grad_logits, weight, out=dx[rows])
        if dw is not None:
            dw.addmm_(grad_logits.t(), x[rows])
    loss = torch.where(valid, row_loss, 0.0).sum()
    return logits, loss / valid.sum() if reduction == "mean" else loss, dx, dw


def linear_cross_entropy(
    x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *, reduction: str = "mean"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x @ weight.T, F.cross_entropy(those logits in fp32, targets, ignore_index=IGNORE_INDEX))`` for
    x (..., d), weight (V, d), targets (...): the same values, computed fused (``_LinearCrossEntropy``),
    so only the loss carries gradient. Under autocast the matmuls run in its dtype, as ``F.linear`` would."""
    device = x.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
    logits, loss = _LinearCrossEntropy.apply(
        x.reshape(-1, x.shape[-1]).to(dtype), weight.to(dtype), targets.reshape(-1), reduction
    )
    return logits.view(*x.shape[:-1], -1), loss


class OutputHead(nn.Linear):
    """The projection to the vocabulary; given targets, fused with the loss (``linear_cross_entropy``).
    A ``Linear`` whose weight stays ``output.weight``, and the loss is computed inside this module's
    own forward, where ZeRO-3 has gathered the weight as for any ``Linear``."""

    def __init__(self, d_model: int, vocab_size: int):
        super().__init__(d_model, vocab_size, bias=False)

    def forward(
        self, x: torch.Tensor, targets: torch.Tensor | None = None, *, reduction: str = "mean"
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits (..., vocab); with ``targets``, (logits without gradient, loss)."""
        if targets is None:
            return super().forward(x)
        return linear_cross_entropy(x, self.weight, targets, reduction=reduction)


class Transformer(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
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
        """Share the embedding with the output head (``to_empty`` makes new tensors, so call it again after)."""
        if self.args.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight

    @torch.no_grad()
    def init_weights(self) -> None:
        """Normal(0, 0.02) everywhere; the projections that write into the residual stream get
        0.02 / sqrt(2 n_layers) so the stream's variance does not grow with depth (GPT-2)."""
        self.tie_weights()
        residual_std = 0.02 / math.sqrt(2 * self.args.n_layers)
        for name, param in self.named_parameters():
            if name.endswith("norm.weight"):
                nn.init.ones_(param)
            elif name.endswith(("wo.weight", "w2.weight")):
                nn.init.normal_(param, mean=0.0, std=residual_std)
            else:
                nn.init.normal_(param, mean=0.0, std=0.02)
        self.rope_cos, self.rope_sin = rope_tables(self.args, device=self.tok_embeddings.weight.device)

    def forward(
        self,
        tokens: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        reduction: str = "mean",
        doc_starts: torch.Tensor | Sequence | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, T, vocab); with ``targets`` also the cross-entropy over targets != IGNORE_INDEX, and
        then only the loss carries gradient (the head and loss are fused: ``linear_cross_entropy``).

        ``reduction="sum"`` lets the training loop normalise by the target count of the whole
        global batch, so accumulation and data parallelism weigh every target token equally.
        ``doc_starts`` (per row, where documents begin; ``document_mask``) keeps attention within each
        document as well as causal; without it, plain causal attention. RoPE positions stay absolute
        within the window, not document-relative (a document's logits depend on where it starts).
        """
        T = tokens.shape[1]
        if T > self.args.seq_len:
            raise ValueError(f"sequence of {T} tokens is longer than the model's seq_len {self.args.seq_len}")
        x = self.tok_embeddings(tokens)  # (B, T, d)
        cos, sin = self.rope_cos[:T].to(x.dtype), self.rope_sin[:T].to(x.dtype)
        mask = None if doc_starts is None else document_mask(doc_starts, (tokens.shape[0], T), tokens.device)
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        if targets is None:
            return self.output(self.norm(x))  # (B, T, vocab)
        return self.output(self.norm(x), targets, reduction=reduction)

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
        """Extend (B, T) ``tokens`` by up to ``max_new_tokens`` sampled ones (``sample_next``), returned whole.

        A KV cache: the prompts go through in one pass, then one token per step. Prompts of unequal
        length come left-padded, ``valid`` (B, T) False on the padding: padding is never attended to,
        and each row's RoPE positions count only its own tokens, so a row generates what it would alone.
        Past the model's ``seq_len`` the window slides and every step reruns it (positions shift, so
        nothing cached stays valid). Stops early once every row has produced ``eos_id`` or been
        declared done by ``finished`` (the tokens generated so far (B, n) -> (B,) bool, e.g. stop strings).
        """
        B, T = tokens.shape
        out = tokens.new_empty(B, T + max_new_tokens)
        out[:, :T] = tokens
        valid = torch.ones_like(tokens, dtype=torch.bool) if valid is None else valid.to(tokens.device)
        valid = torch.cat([valid, valid.new_ones(B, max_new_tokens)], dim=1)  # every generated token is real
        done = torch.zeros(B, dtype=torch.bool, device=tokens.device)
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
                done |= finished(out[:, T:n])
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


def sample_next(
    logits: torch.Tensor,
    *,
    temperature: float,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One token id per row of (B, vocab) ``logits``: temperature 0 is greedy (argmax); otherwise drawn
    from softmax(logits / temperature) restricted to the ``top_k`` most probable (0: all), then to the
    nucleus of mass ``top_p`` (1: all)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        logits = logits.masked_fill(outside_nucleus(logits, top_p), float("-inf"))
    return torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator).squeeze(1)


def outside_nucleus(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """True for the tokens outside the smallest set of the most probable whose probabilities sum to
    >= ``top_p`` (nucleus sampling); the most probable token is always kept."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    drop = probs.cumsum(dim=-1) - probs >= top_p  # the tokens more probable than this one already reach top_p
    return torch.empty_like(drop).scatter_(-1, order, drop)  # back from sorted order to vocabulary order


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
