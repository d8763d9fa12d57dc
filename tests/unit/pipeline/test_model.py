"""The model: shapes, causality, N against the ladder, GQA, tying, loss masking, generation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.job_config import ModelConfig
from pipeline.ladder import SIZES
from pipeline.model import IGNORE_INDEX, ModelArgs, Transformer, build_model

VOCAB = 97


def make_model(seed: int = 0, **overrides) -> Transformer:
    args = ModelArgs.from_config(ModelConfig(size="tiny", seq_len=32, **overrides), vocab_size=VOCAB)
    torch.manual_seed(seed)
    model = build_model(args)
    model.to_empty(device="cpu")
    model.init_weights()
    return model


def test_forward_shapes_and_loss():
    model = make_model()
    tokens = torch.randint(0, VOCAB, (3, 32))
    assert model(tokens).shape == (3, 32, VOCAB)
    logits, loss = model(tokens, torch.randint(0, VOCAB, (3, 32)))
    assert logits.shape == (3, 32, VOCAB) and loss.shape == ()
    assert loss.item() == pytest.approx(math.log(VOCAB), rel=0.1)  # near uniform at init
    with pytest.raises(ValueError, match="seq_len"):
        model(torch.zeros(1, 33, dtype=torch.long))


def test_future_tokens_do_not_change_past_logits():
    model = make_model()
    tokens = torch.randint(0, VOCAB, (2, 32))
    changed = tokens.clone()
    changed[:, 20:] = torch.randint(0, VOCAB, (2, 12))
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    torch.testing.assert_close(a[:, :20], b[:, :20])
    assert not torch.allclose(a[:, 20:], b[:, 20:])


@pytest.mark.parametrize("size", list(SIZES))
def test_num_params_is_the_ladders_n(size):
    for tie in (True, False):
        args = ModelArgs.from_config(ModelConfig(size=size, tie_embeddings=tie), vocab_size=1000)
        model = build_model(args)  # meta: costs nothing even for the big rungs
        assert model.num_params() == SIZES[size].non_embedding_params()
        embeddings = 1000 * args.d_model * (1 if tie else 2)
        assert model.num_params(non_embedding=False) == model.num_params() + embeddings


def test_tied_embeddings_share_one_tensor():
    tied, untied = make_model(), make_model(tie_embeddings=False)
    assert tied.output.weight is tied.tok_embeddings.weight
    assert untied.output.weight is not untied.tok_embeddings.weight


def test_grouped_query_attention_equals_attention_with_repeated_kv_heads():
    """GQA with 2 kv heads == MHA whose k/v heads are those 2 heads, each repeated for 2 query heads."""
    gqa = make_model(n_heads=4, n_kv_heads=2)
    mha = make_model(n_heads=4, n_kv_heads=4)
    head_dim = gqa.args.head_dim
    with torch.no_grad():
        state = gqa.state_dict()
        for key, value in state.items():
            if key.endswith(("attention.wk.weight", "attention.wv.weight")):
                heads = value.view(2, head_dim, -1)
                state[key] = heads.repeat_interleave(2, dim=0).reshape(4 * head_dim, -1)
        mha.load_state_dict(state)
        tokens = torch.randint(0, VOCAB, (2, 32))
        torch.testing.assert_close(gqa(tokens), mha(tokens), rtol=1e-5, atol=1e-5)
    assert gqa.num_params() < mha.num_params()


def test_ignored_targets_do_not_count():
    model = make_model()
    tokens = torch.randint(0, VOCAB, (2, 32))
    targets = tokens.clone()
    targets[:, :10] = IGNORE_INDEX
    logits, loss = model(tokens, targets)
    expected = F.cross_entropy(logits[:, 10:].reshape(-1, VOCAB), tokens[:, 10:].reshape(-1))
    torch.testing.assert_close(loss, expected)
    _, summed = model(tokens, targets, reduction="sum")
    torch.testing.assert_close(summed, expected * targets[:, 10:].numel())


def test_init_weights_is_seeded_and_scaled():
    a, b = make_model(seed=1), make_model(seed=1)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), name
    block = a.layers[0]
    assert torch.equal(block.attention_norm.weight, torch.ones(a.args.d_model))
    assert block.feed_forward.w2.weight.std() < block.feed_forward.w1.weight.std()  # residual projections smaller


def test_generate_greedy_is_deterministic_and_stops_at_eos():
    model = make_model()
    prompt = torch.randint(0, VOCAB, (1, 5))
    a = model.generate(prompt, 40, temperature=0)  # runs past seq_len: the context is cropped
    b = model.generate(prompt, 40, temperature=0)
    assert a.shape == (1, 45) and torch.equal(a, b) and torch.equal(a[:, :5], prompt)
    first = int(a[0, 5])
    stopped = model.generate(prompt, 40, temperature=0, eos_id=first)
    assert stopped.shape == (1, 6)
    sampled = model.generate(prompt, 10, temperature=1.0, top_k=3, generator=torch.Generator().manual_seed(0))
    assert sampled.shape == (1, 15) and int(sampled.max()) < VOCAB
