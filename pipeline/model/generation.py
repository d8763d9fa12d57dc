"""Generation's parts: the KV cache the model fills one step at a time, and token sampling
(temperature, top-k, nucleus). ``Transformer.generate`` drives them.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from pipeline.model.args import ModelArgs


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
    """Keys and values of every layer for generation, preallocated: (B, KV, capacity, hd) per layer,
    filled left to right, ``length`` slots so far. Rows of unequal prompts are left-padded
    (``Transformer.generate``)."""

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


def sampling_generator(device: torch.device | str, seed: int) -> torch.Generator:
    """A seeded generator for ``sample_next`` on ``device``, the model's: ``torch.multinomial`` on CUDA
    refuses a CPU generator."""
    return torch.Generator(device=device).manual_seed(seed)


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
