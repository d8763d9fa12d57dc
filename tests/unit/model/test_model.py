"""The model: shapes, causality, N against the ladder, GQA, tying, loss masking, the fused head + loss,
generation."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

import pipeline.model.loss
from pipeline.config.model import ModelConfig
from pipeline.model.ladder import SIZES
from pipeline.model.loss import IGNORE_INDEX, linear_cross_entropy
from pipeline.model.transformer import Transformer, build_model, causal_attention

VOCAB = 97


def make_model(seed: int = 0, **overrides) -> Transformer:
    args = ModelConfig(size="tiny", seq_len=32, **overrides).args(vocab_size=VOCAB)
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
    assert logits is None and loss.shape == ()  # no (B, T, vocab) logits held through the step
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
        args = ModelConfig(size=size, tie_embeddings=tie).args(vocab_size=1000)
        model = build_model(args)  # meta: costs nothing even for the big rungs
        assert model.num_params() == SIZES[size].non_embedding_params()
        embeddings = 1000 * args.d_model * (1 if tie else 2)
        assert model.num_params(non_embedding=False) == model.num_params() + embeddings


def test_n_counts_the_shapes_own_ffn_hidden():
    """An imported HF model's intermediate_size need not follow the ladder's 8/3 rule; N follows the shape."""
    args = dataclasses.replace(ModelConfig(size="tiny", seq_len=16).args(vocab_size=VOCAB), ffn_hidden=200)
    assert build_model(args).num_params() == args.non_embedding_params()
    assert args.non_embedding_params() != SIZES["tiny"].non_embedding_params()


def test_a_bare_ladder_rung_is_not_a_model():
    with pytest.raises(ValueError, match="resolve it with ModelConfig.args"):
        build_model(SIZES["tiny"])


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


@pytest.mark.parametrize("length", [100, 128, 5])  # a partial last block, whole blocks, less than one
def test_blockwise_causal_attention_equals_one_causal_call(length):
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, length, 8, generator=generator, requires_grad=True)
    k, v = (torch.randn(2, 2, length, 8, generator=generator, requires_grad=True) for _ in range(2))

    def one_call(*qkv: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(*qkv, is_causal=True, enable_gqa=True).transpose(1, 2)

    results = []
    for attend in (causal_attention, one_call):
        y = attend(q, k, v)
        results.append((y, *torch.autograd.grad(y.square().sum(), (q, k, v))))
    for blockwise, reference in zip(*results):
        torch.testing.assert_close(blockwise, reference, rtol=1e-5, atol=1e-6)


def test_ignored_targets_do_not_count():
    model = make_model()
    tokens = torch.randint(0, VOCAB, (2, 32))
    targets = tokens.clone()
    targets[:, :10] = IGNORE_INDEX
    _, loss = model(tokens, targets)
    logits = model(tokens)
    expected = F.cross_entropy(logits[:, 10:].reshape(-1, VOCAB), tokens[:, 10:].reshape(-1))
    torch.testing.assert_close(loss, expected)
    _, summed = model(tokens, targets, reduction="sum")
    torch.testing.assert_close(summed, expected * targets[:, 10:].numel())


def unfused_loss(
    x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, reduction: str
) -> torch.Tensor:
    """The reference the fused head + loss must equal: a linear layer, then cross-entropy in fp32."""
    logits = F.linear(x, weight)
    return F.cross_entropy(
        logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX, reduction=reduction
    )


def fused_loss(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, reduction: str) -> torch.Tensor:
    return linear_cross_entropy(x, weight, targets, reduction=reduction)


def head_inputs(seed: int = 0, vocab: int = 300) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hidden states (2, 50, 16), a head (vocab, 16) and targets, ten of them ignored."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 50, 16, generator=generator)
    weight = torch.randn(vocab, 16, generator=generator) * 0.3
    targets = torch.randint(0, vocab, (2, 50), generator=generator)
    targets[0, :10] = IGNORE_INDEX
    return x, weight, targets


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("chunk_rows", [7, 32, 50, 1000])  # with a remainder (7, 32), exact (50), one
def test_fused_head_and_loss_equal_linear_then_cross_entropy(monkeypatch, reduction, chunk_rows):
    x, weight, targets = head_inputs()
    monkeypatch.setattr(pipeline.model.loss, "LOSS_CHUNK_LOGITS", chunk_rows * weight.shape[0])
    grads = []
    for loss_fn in (unfused_loss, fused_loss):
        xi, wi = x.clone().requires_grad_(), weight.clone().requires_grad_()
        loss = loss_fn(xi, wi, targets, reduction)
        (loss * 3.0).backward()  # a loss gradient other than 1 reaches both
        grads.append((loss.detach(), xi.grad, wi.grad))
    for expected, fused in zip(*grads):
        torch.testing.assert_close(fused, expected, rtol=1e-5, atol=1e-6)


def test_fused_loss_alone_carries_gradient_and_skips_it_without_grad():
    x, weight, targets = head_inputs()
    loss = linear_cross_entropy(x.requires_grad_(), weight, targets)
    assert loss.requires_grad
    with torch.no_grad():
        no_grad_loss = linear_cross_entropy(x, weight, targets)
    torch.testing.assert_close(no_grad_loss, loss.detach())
    with pytest.raises(ValueError, match="reduction"):
        linear_cross_entropy(x, weight, targets, reduction="none")


def test_fused_loss_under_autocast_matches_autocast_linear():
    """In bf16 the matmuls run in bf16 (as autocast's F.linear), the softmax in fp32."""
    x, weight, targets = head_inputs()
    results = []
    for loss_fn in (unfused_loss, fused_loss):
        xi, wi = x.clone().requires_grad_(), weight.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = loss_fn(xi, wi, targets, "mean")
        loss.backward()
        assert loss.dtype == torch.float32
        assert xi.grad.dtype == wi.grad.dtype == torch.float32
        results.append((loss.detach(), xi.grad, wi.grad))
    for expected, fused in zip(*results):
        torch.testing.assert_close(fused, expected, rtol=2e-2, atol=2e-3)


def test_model_gradients_equal_those_of_the_unfused_loss():
    """The whole model, tied head included: the fused loss's gradients are the plain cross-entropy's."""
    model = make_model()
    tokens, targets = torch.randint(0, VOCAB, (2, 32)), torch.randint(0, VOCAB, (2, 32))
    targets[1, 5:9] = IGNORE_INDEX
    model(tokens, targets)[1].backward()
    fused = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    F.cross_entropy(model(tokens).flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX).backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(fused[name], p.grad, rtol=1e-5, atol=1e-7, msg=name)


def test_init_weights_is_seeded_and_scaled():
    a, b = make_model(seed=1), make_model(seed=1)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), name
    block = a.layers[0]
    assert torch.equal(block.attention_norm.weight, torch.ones(a.args.d_model))
    assert (
        block.feed_forward.w2.weight.std() < block.feed_forward.w1.weight.std()
    )  # residual projections smaller


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
