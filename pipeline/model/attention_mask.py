"""Document masking (``data.doc_masking``): attention causal and within one document of a packed window.

``Transformer.forward`` builds the mask once per batch (``attention_mask``) and every layer shares it.
It takes one of two forms:

- on CUDA a FlexAttention ``BlockMask``, run by the compiled flex kernel (``flex_document_attention``),
  which skips every (128-query, 128-key) tile that no query-key pair of one document shares, and evaluates
  no mask on the tiles it allows whole: the shorter the documents, the fewer tiles. SDPA with the dense mask
  scores every tile instead: 2.8x the causal time with cuDNN, 30x with the math backend, on an H200
  (issue 20 item 8).
- elsewhere the dense (B, 1, T, T) boolean mask for SDPA (``document_mask``). FlexAttention in torch 2.13
  has no backward on the CPU, eager or compiled, so CPU training cannot use it; and ``causal_attention``
  already skips the keys after each block of queries there.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import cast

import torch
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

AttentionMask = torch.Tensor | BlockMask
"""What the layers take: a dense (B, 1, T, T) boolean mask (True = attend) or a ``BlockMask``."""

FLEX_DEVICES = frozenset({"cuda"})
"""Device types where ``attention_mask`` builds a ``BlockMask``: those where compiled flex has a backward."""


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


def document_ids(
    doc_starts: torch.Tensor | Sequence, shape: tuple[int, int], device: torch.device | str | None = None
) -> torch.Tensor:
    """(B, T) int64: the document each position belongs to, numbered along the row (``document_mask``)."""
    return doc_starts_indicator(doc_starts, shape, device).cumsum(dim=1)


def document_mask(
    doc_starts: torch.Tensor | Sequence, shape: tuple[int, int], device: torch.device | str | None = None
) -> torch.Tensor:
    """The (B, 1, T, T) boolean attention mask, True = attend: causal and within one document.

    ``doc_starts`` is per row the input positions where a document begins (``TokenLoader(doc_starts=True)``'s
    third item: B 1-D int arrays or tensors), or a (B, T) boolean tensor marking them. Positions before a
    row's first start (a document cut by the window) form a document of their own.
    """
    return dense_document_mask(document_ids(doc_starts, shape, device))


def dense_document_mask(doc_ids: torch.Tensor) -> torch.Tensor:
    """``document_mask`` from (B, T) ``document_ids``."""
    T = doc_ids.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=doc_ids.device).tril()
    return (causal & (doc_ids[:, :, None] == doc_ids[:, None, :]))[:, None]  # (B, 1, T, T)


def document_block_mask(doc_ids: torch.Tensor) -> BlockMask:
    """``document_mask`` from (B, T) ``document_ids`` as a ``BlockMask`` for every head.

    On CUDA ``create_block_mask`` runs compiled: eager, it would materialise the (B, 1, T, T) mask and the
    document ids gathered for every pair, int64, each step; compiled, it writes only the block tables.
    """
    B, T = doc_ids.shape

    def causal_same_document(
        b: torch.Tensor, h: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor
    ) -> torch.Tensor:
        return (q_idx >= kv_idx) & (doc_ids[b, q_idx] == doc_ids[b, kv_idx])

    build = _compiled_create_block_mask() if doc_ids.is_cuda else create_block_mask
    return build(causal_same_document, B, None, T, T, device=doc_ids.device)


def attention_mask(
    doc_starts: torch.Tensor | Sequence, shape: tuple[int, int], device: torch.device
) -> AttentionMask:
    """The document mask for (B, T) tokens on ``device``: a ``BlockMask`` on ``FLEX_DEVICES``, else dense."""
    doc_ids = document_ids(doc_starts, shape, device)
    if device.type in FLEX_DEVICES:
        return document_block_mask(doc_ids)
    return dense_document_mask(doc_ids)


def flex_document_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: BlockMask
) -> torch.Tensor:
    """Attention of q (B, H, T, hd) over k, v (B, KV, T, hd) where ``block_mask`` allows, as (B, T, H, hd).

    Compiled on CUDA, where flex is fast only as the kernel generated for the mask. Elsewhere eager flex, a
    reference implementation that scores every pair (torch warns so): it has no backward on the CPU, and
    checks the ``BlockMask`` against the dense mask there (tests)."""
    if q.is_cuda:
        y = _compiled_flex_attention()(q, k, v, block_mask=block_mask, enable_gqa=True)
    else:
        y = cast(torch.Tensor, flex_attention(q, k, v, block_mask=block_mask, enable_gqa=True))
    return y.transpose(1, 2)


@functools.cache
def _compiled_flex_attention() -> Callable[..., torch.Tensor]:
    # Compiled on first use, once per process: importing the model compiles nothing (CPU runs never do).
    return torch.compile(flex_attention)


@functools.cache
def _compiled_create_block_mask() -> Callable[..., BlockMask]:
    return torch.compile(create_block_mask)
