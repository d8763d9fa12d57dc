"""CUDA-only defaults (issue 20): TF32 matmuls and pinned host batches on CUDA, nothing changed elsewhere.
No GPU here: the switches are tested with the device as a parameter, and pinning (which a CPU-only
build cannot do) through a stand-in for ``Tensor.pin_memory``."""

from __future__ import annotations

import pytest
import torch

from pipeline.testing import write_random_shards
from pipeline.train.cuda import enable_tf32, pin_batches
from pipeline.train.data import TokenLoader


@pytest.fixture
def tf32_off():
    """Both TF32 flags off for the test, and as they were after it (they are process-wide)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.usefixtures("tf32_off")
@pytest.mark.parametrize("device", ["cpu", torch.device("cpu"), "meta"])
def test_tf32_stays_off_off_cuda(device):
    enable_tf32(device)
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32


@pytest.mark.usefixtures("tf32_off")
@pytest.mark.parametrize("device", ["cuda", "cuda:1", torch.device("cuda", 0)])
def test_tf32_goes_on_for_cuda(device):
    enable_tf32(device)
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert torch.get_float32_matmul_precision() == "high"


@pytest.mark.parametrize(
    ("device", "pinned"), [("cuda", True), (torch.device("cuda", 1), True), ("cpu", False)]
)
def test_batches_are_pinned_only_for_cuda(tmp_path, monkeypatch, device, pinned):
    pinned_ids: set[int] = set()

    def pin_memory(tensor: torch.Tensor) -> torch.Tensor:  # a CPU-only build cannot pin: mark instead
        copy = tensor.clone()
        pinned_ids.add(id(copy))
        return copy

    monkeypatch.setattr(torch.Tensor, "pin_memory", pin_memory)
    write_random_shards(tmp_path, {"train": [37, 5, 80, 13]}, vocab_size=300)
    loader = TokenLoader(tmp_path, seq_len=16, batch_size=2, pin_memory=pin_batches(device))
    batches = iter(loader)
    for _ in range(3):  # through the prefetch thread, where the pinning happens
        inputs, targets = next(batches)
        assert inputs.shape == targets.shape == (2, 16)
        assert (id(inputs._base) in pinned_ids) == (id(targets._base) in pinned_ids) == pinned
    assert bool(pinned_ids) == pinned
