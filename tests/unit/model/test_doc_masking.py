"""Document masking: attention causal and within one document of a packed window (``data.doc_masking``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.config.model import ModelConfig
from pipeline.model.attention_mask import document_mask
from pipeline.model.transformer import Transformer, build_model
from pipeline.train.pretrain import train

VOCAB, T = 97, 32


@pytest.fixture(scope="module")
def model() -> Transformer:
    torch.manual_seed(0)
    model = build_model(ModelConfig(size="tiny", seq_len=T).args(vocab_size=VOCAB))
    model.to_empty(device="cpu")
    model.init_weights()
    return model.eval()


def tokens(*shape: int, seed: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, shape, generator=torch.Generator().manual_seed(seed))


def test_the_mask_is_block_diagonal_causal():
    mask = document_mask([np.array([0, 2]), np.array([3])], (2, 5))
    assert mask.shape == (2, 1, 5, 5) and mask.dtype == torch.bool
    expected0 = torch.tensor(
        [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 1, 1, 1]]
    )
    expected1 = torch.tensor(
        [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 1, 1]]
    )
    assert torch.equal(mask[0, 0], expected0.bool()) and torch.equal(mask[1, 0], expected1.bool())
    as_bool = torch.zeros(2, 5, dtype=torch.bool)
    as_bool[0, [0, 2]] = as_bool[1, 3] = True
    assert torch.equal(document_mask(as_bool, (2, 5)), mask)


@torch.no_grad()
def test_two_documents_in_a_row_see_only_themselves(model):
    split = 12
    row = tokens(1, T, seed=1)
    starts = [np.array([0, split])]
    masked = model(row, doc_starts=starts)
    # The first document: exactly its logits when run alone (same absolute positions 0..split-1).
    torch.testing.assert_close(masked[:, :split], model(row[:, :split]), rtol=0, atol=1e-5)
    # The second: other tokens in the first document leave its logits unchanged (positions kept absolute).
    other = row.clone()
    other[:, :split] = tokens(1, split, seed=2)
    torch.testing.assert_close(
        model(other, doc_starts=starts)[:, split:], masked[:, split:], rtol=0, atol=1e-5
    )
    # ... whereas plain causal attention does see them, and differs from the masked logits.
    assert not torch.allclose(model(other)[:, split:], model(row)[:, split:], atol=1e-3)
    assert not torch.allclose(model(row)[:, split:], masked[:, split:], atol=1e-3)


@torch.no_grad()
def test_one_document_per_row_is_plain_causal_attention(model):
    batch = tokens(3, T, seed=3)
    plain = model(batch)
    one_doc = model(batch, doc_starts=[np.array([0])] * 3)
    torch.testing.assert_close(one_doc, plain, rtol=0, atol=1e-6)
    assert torch.equal(model(batch, doc_starts=None), plain)  # without doc_starts: the same path, bit for bit


def test_train_with_doc_masking_applies_the_mask(train_config, tmp_path):
    base = ("train.max_steps=3", "checkpoint.interval=0")
    plain = train(train_config(*base, f"output_dir={tmp_path / 'plain'}"))
    masked = train(train_config(*base, "data.doc_masking=true", f"output_dir={tmp_path / 'masked'}"))
    assert masked.steps == plain.steps == 3
    assert np.isfinite(masked.last_train_loss)
    # Same data, same initial weights: only the mask can make the losses differ.
    assert masked.first_train_loss != plain.first_train_loss
