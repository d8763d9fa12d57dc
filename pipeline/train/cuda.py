"""Defaults that only make sense on a CUDA device, each a no-op elsewhere, so the CPU path (tests, laptops)
stays bit for bit what it was: TF32 matmuls, pinned host batches, and where inference runs."""

from __future__ import annotations

import torch


def enable_tf32(device: torch.device | str) -> None:
    """On CUDA, let fp32 matmuls and cuDNN convolutions use TF32 tensor cores (PyTorch leaves matmuls in
    full fp32 by default): several times the fp32 matmul throughput on Ampere and later, at a 10-bit
    mantissa that mixed-precision training already accepts in bf16. What still runs in fp32 under
    autocast (the fused loss's softmax is elementwise, not a matmul) is unaffected. Process-wide, so call
    it once when the job has picked its device; on any other device nothing changes."""
    if torch.device(device).type != "cuda":
        return
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def pin_batches(device: torch.device | str) -> bool:
    """Whether host batches bound for ``device`` should be built in pinned memory: only for CUDA, where
    a pinned source lets ``.to(device, non_blocking=True)`` copy without a staging copy and without
    blocking the host; elsewhere pinning is an extra copy (and CPU-only builds cannot pin)."""
    return torch.device(device).type == "cuda"


def inference_device() -> torch.device:
    """Where evaluation and generation run in this process: the current CUDA device if there is one,
    else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
