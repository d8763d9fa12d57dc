"""The fused head + loss's memory off the CPU: chunked on every device, it never makes a (tokens, vocab)
tensor, where the plain linear + cross-entropy makes several (issue 20). Run on the ``meta`` device,
which takes the path of an accelerator and allocates nothing, at a real size: 16k tokens, a 128k
vocabulary."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.autograd.graph import saved_tensors_hooks
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import pipeline.model.loss
from pipeline.model.loss import IGNORE_INDEX, LOSS_CHUNK_ROWS, linear_cross_entropy, loss_chunk_rows

TOKENS, VOCAB, D_MODEL = 16384, 128256, 64


class LargestTensor(TorchDispatchMode):
    """The bytes of the largest tensor any op makes while active: a floor under the peak memory."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                self.bytes = max(self.bytes, tensor.numel() * tensor.element_size())
        return out


def head_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """bf16 hidden states and an fp32 head weight (as a mixed-precision step has them) on ``meta``."""
    x = torch.empty(TOKENS, D_MODEL, device="meta", dtype=torch.bfloat16, requires_grad=True)
    weight = torch.empty(VOCAB, D_MODEL, device="meta", requires_grad=True)
    targets = torch.zeros(TOKENS, device="meta", dtype=torch.int64)
    return x, weight, targets


def unfused(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(F.linear(x, weight.to(x.dtype)).float(), targets, ignore_index=IGNORE_INDEX)


@pytest.mark.parametrize("loss_fn", [unfused, linear_cross_entropy])
def test_only_the_unfused_loss_makes_or_saves_a_tokens_by_vocab_tensor(loss_fn):
    x, weight, targets = head_inputs()
    saved: list[int] = []
    with LargestTensor() as largest, saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        loss_fn(x, weight, targets).backward()
    assert x.grad.shape == x.shape and weight.grad.dtype == torch.float32  # a step, gradients and all
    whole_bf16_logits = TOKENS * VOCAB * 2
    if loss_fn is unfused:
        assert largest.bytes >= 2 * whole_bf16_logits  # the fp32 logits, their log-softmax, its gradient
        assert max(saved) >= TOKENS * VOCAB
    else:
        assert largest.bytes <= LOSS_CHUNK_ROWS * VOCAB * 4 < whole_bf16_logits  # one chunk, in fp32
        assert max(saved) < TOKENS * VOCAB  # only the gradients of x and the weight wait for backward


def test_chunks_are_rows_by_device():
    """The CPU's chunk is sized for its cache, any other device's (CUDA's) by rows for memory."""
    cpu = torch.empty(TOKENS, D_MODEL, dtype=torch.bfloat16)
    assert loss_chunk_rows(cpu, VOCAB) == pipeline.model.loss.LOSS_CHUNK_LOGITS // VOCAB
    assert loss_chunk_rows(cpu.to("meta"), VOCAB) == LOSS_CHUNK_ROWS < TOKENS


def test_low_precision_chunks_sum_the_weight_gradient_in_fp32(monkeypatch):
    """bf16 matmuls over 10 chunks: the fp32 weight's gradient is as near the fp32 reference as one
    chunk's is, not rounded to bf16 at every chunk."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(400, 16, generator=generator)
    weight = torch.randn(50, 16, generator=generator) * 0.3
    targets = torch.randint(0, 50, (400,), generator=generator)
    xi, wi = x.clone().requires_grad_(), weight.clone().requires_grad_()
    unfused(xi, wi, targets).backward()
    errors = []
    for rows in (400, 40):
        monkeypatch.setattr(pipeline.model.loss, "LOSS_CHUNK_LOGITS", rows * 50)
        wb = weight.clone().requires_grad_()
        linear_cross_entropy(x.bfloat16(), wb, targets).backward()
        assert wb.grad.dtype == torch.float32
        errors.append(float((wb.grad - wi.grad).abs().max()))
    assert errors[1] <= 1.5 * errors[0]
