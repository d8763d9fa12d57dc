"""Document masking's two forms (``pipeline.model.attention_mask``): the dense mask that SDPA takes on the
CPU and the FlexAttention ``BlockMask`` that CUDA runs, which must allow the same pairs and skip the tiles
that no document spans. Flex has no backward on the CPU (torch 2.13), so gradients are compared on CUDA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.config.model import ModelConfig
from pipeline.model import attention_mask as am
from pipeline.model.transformer import build_model, causal_attention

# Eager flex (the CPU's) is a reference implementation, and torch warns that it is not the fused kernel.
pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")

H, KV, HEAD_DIM = 4, 2, 32
BLOCK = 128  # create_block_mask's default tile


def mixed_starts(T: int, seed: int) -> torch.Tensor:
    """(4, T) document starts: a row with none (one document cut by the window), one starting at 0 only,
    many short documents, and a few at random with one at the last position."""
    generator = torch.Generator().manual_seed(seed)
    starts = torch.zeros(4, T, dtype=torch.bool)
    starts[1, 0] = True
    starts[2] = torch.rand(T, generator=generator) < 0.3
    starts[3] = torch.rand(T, generator=generator) < 0.02
    starts[3, T - 1] = True
    return starts


def qkv(B: int, T: int, seed: int, device: str = "cpu") -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, n, T, HEAD_DIM, generator=generator).to(device) for n in (H, KV, KV))


@pytest.mark.parametrize("T", [256, 200, 37])  # whole tiles, a partial last tile, less than one tile
def test_flex_with_the_block_mask_equals_sdpa_with_the_dense_mask(T):
    starts = mixed_starts(T, seed=T)
    doc_ids = am.document_ids(starts, (4, T))
    q, k, v = qkv(4, T, seed=T)
    flex = causal_attention(q, k, v, am.document_block_mask(doc_ids))
    dense = causal_attention(q, k, v, am.dense_document_mask(doc_ids))  # the CPU training path
    assert flex.shape == dense.shape == (4, T, H, HEAD_DIM)
    torch.testing.assert_close(flex, dense, rtol=0, atol=1e-5)


def test_the_block_mask_skips_every_tile_no_document_spans():
    T = 512
    n = T // BLOCK
    starts = torch.zeros(3, T, dtype=torch.bool)
    starts[0, ::32] = True  # short documents that end at tile edges: no tile below the diagonal holds a pair
    starts[1, 0] = True  # one document: every causal tile
    starts[2, ::20] = True  # short documents across the tile edges: the tiles just below the diagonal too
    doc_ids = am.document_ids(starts, (3, T))
    block_mask = am.document_block_mask(doc_ids)
    tiles = am.dense_document_mask(doc_ids).view(3, n, BLOCK, n, BLOCK)
    expected_partial = tiles.any(dim=(2, 4)) & ~tiles.all(dim=(2, 4))
    expected_full = tiles.all(dim=(2, 4))
    partial = block_mask.kv_num_blocks.sum(dim=-1).flatten()  # per row: tiles computed with the mask
    assert block_mask.full_kv_num_blocks is not None
    full = block_mask.full_kv_num_blocks.sum(dim=-1).flatten()  # ... and without it (all pairs allowed)
    assert partial.tolist() == expected_partial.sum(dim=(1, 2)).tolist()
    assert full.tolist() == expected_full.sum(dim=(1, 2)).tolist()
    causal_tiles = n * (n + 1) // 2
    assert int(partial[1] + full[1]) == causal_tiles
    assert int(partial[0] + full[0]) == n < causal_tiles
    assert int(partial[2] + full[2]) == 2 * n - 1 < causal_tiles


def test_the_cpu_mask_is_the_dense_document_mask():
    """CPU training keeps SDPA with the dense mask (flex has no CPU backward): the committed runs' numbers."""
    starts = mixed_starts(64, seed=0)
    mask = am.attention_mask(starts, (4, 64), torch.device("cpu"))
    assert isinstance(mask, torch.Tensor) and torch.equal(mask, am.document_mask(starts, (4, 64)))


@torch.no_grad()
def test_the_model_gives_the_same_logits_with_the_block_mask(monkeypatch):
    """Every layer takes the one ``BlockMask`` the forward builds: the logits are the dense path's."""
    T, vocab = 64, 97
    torch.manual_seed(0)
    model = build_model(ModelConfig(size="tiny", seq_len=T).args(vocab_size=vocab))
    model.to_empty(device="cpu")
    model.init_weights()
    tokens = torch.randint(0, vocab, (3, T), generator=torch.Generator().manual_seed(1))
    starts = [np.array([0, 5, 6, 40]), np.array([], dtype=np.int64), np.arange(0, T, 3)]
    dense = model(tokens, doc_starts=starts)
    built = []
    build = am.document_block_mask

    def counted(doc_ids: torch.Tensor) -> am.BlockMask:
        built.append(doc_ids)
        return build(doc_ids)

    monkeypatch.setattr(am, "FLEX_DEVICES", frozenset({"cpu"}))
    monkeypatch.setattr(am, "document_block_mask", counted)
    flex = model(tokens, doc_starts=starts)
    assert len(built) == 1  # once per forward, not per layer
    torch.testing.assert_close(flex, dense, rtol=0, atol=1e-5)
    assert not torch.allclose(model(tokens), dense, atol=1e-3)  # the mask matters for these starts


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_compiled_flex_on_cuda_matches_dense_sdpa_in_outputs_and_gradients():
    T = 384
    starts = mixed_starts(T, seed=1).cuda()
    mask = am.attention_mask(starts, (4, T), torch.device("cuda"))
    assert isinstance(mask, am.BlockMask)
    dense = am.document_mask(starts, (4, T))
    results = []
    for attend_mask in (mask, dense):
        q, k, v = (x.requires_grad_() for x in qkv(4, T, seed=2, device="cuda"))
        y = causal_attention(q, k, v, attend_mask)
        results.append((y, *torch.autograd.grad(y.square().sum(), (q, k, v))))
    for flex, reference in zip(*results):
        torch.testing.assert_close(flex, reference, rtol=1e-4, atol=1e-4)
