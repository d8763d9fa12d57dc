"""Training attention on CUDA runs a fused kernel (flash or cuDNN), not SDPA's math fallback, which
materialises the (T, T) scores of every head: the tiny model's grouped-query attention (4 query heads on 2
key/value heads, head_dim 32) is a shape the fused kernels must take, causal and in bf16."""

from __future__ import annotations

import pytest
import torch
from gpu_helpers import GPU_MARKS
from torch.autograd import DeviceType
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile

from pipeline.config.model import ModelConfig
from pipeline.config.train import LoopConfig
from pipeline.model.transformer import build_model
from pipeline.parallel.base import ParallelModel
from pipeline.parallel.dist import DistInfo
from pipeline.parallel.registry import parallelize

pytestmark = GPU_MARKS

ARGS = ModelConfig(size="tiny", seq_len=64).args(vocab_size=512)
FUSED = [SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION]


def training_model() -> ParallelModel:
    """The tiny model as one GPU trains it in bf16: ddp's plain module under autocast."""
    torch.manual_seed(0)
    cuda = DistInfo(device=torch.device("cuda", torch.cuda.current_device()))
    return parallelize(
        build_model(ARGS), strategy="ddp", dist=cuda, loop=LoopConfig(precision="bf16"), total_steps=1
    )


def forward_backward(parallel: ParallelModel) -> float:
    """One training micro-step on a fixed batch; its loss."""
    tokens = torch.randint(
        0, ARGS.vocab_size, (4, ARGS.seq_len + 1), generator=torch.Generator().manual_seed(0)
    ).cuda()
    _, loss = parallel(tokens[:, :-1], tokens[:, 1:])
    parallel.backward(loss)
    return loss.item()


def test_a_training_step_runs_a_flash_or_cudnn_attention_kernel():
    parallel = training_model()
    forward_backward(parallel)  # lazy initialisation and kernel selection stay out of the profile
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        forward_backward(parallel)
        torch.cuda.synchronize()
    kernels = {event.name for event in prof.events() if event.device_type == DeviceType.CUDA}
    # Flash kernels are named flash_fwd/flash_bwd..., cuDNN's cudnn_...; the memory-efficient kernels
    # (fmha_cutlass...) and the math path's matmuls and softmax match neither.
    fused = sorted(name for name in kernels if "flash" in name.lower() or "cudnn" in name.lower())
    assert fused, f"no flash or cuDNN attention kernel among {sorted(kernels)}"


def test_the_model_trains_with_sdpa_restricted_to_flash_and_cudnn():
    """With only the fused backends allowed, SDPA raises rather than falls back: the forward and backward
    succeed only if one of them takes the model's attention. Their loss is the math backend's, to bf16
    rounding."""
    with sdpa_kernel(FUSED):
        fused = training_model()
        loss = forward_backward(fused)
    with sdpa_kernel([SDPBackend.MATH]):
        expected = forward_backward(training_model())
    assert loss == pytest.approx(expected, rel=1e-2)
    grads = [p.grad for p in fused.model.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
