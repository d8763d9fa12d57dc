"""MFU: FLOPs per token from the model's shape, device peaks, and the ratio."""

from __future__ import annotations

import pytest
import torch

from pipeline.train.mfu import flops_per_token, mfu, peak_flops


def test_flops_per_token_is_6n_plus_attention():
    # GPT-3 175B (PaLM appendix B's example shape): N = 175e9, L = 96, d = 12288, T = 2048.
    assert flops_per_token(175_000_000_000, 96, 12288, 2048) == 6 * 175e9 + 12 * 96 * 12288 * 2048
    assert flops_per_token(1000, 2, 64, 128) == 6000 + 196_608
    assert flops_per_token(1000, 2, 64, 128, vocab_size=100) == 6000 + 6 * 100 * 64 + 196_608


def test_mfu_of_known_numbers():
    # 1000 tok/s of a 1e9 FLOPs/token model on a 1e13 FLOP/s device: 10%.
    assert mfu(1000.0, 1e9, 1e13) == pytest.approx(0.1)
    assert mfu(1000.0, 1e9, None) is None


@pytest.fixture
def tf32():
    """``tf32(allowed)`` sets torch's process-wide TF32 matmul switch; put back after the test (monkeypatch
    cannot: torch.backends.cuda.matmul is a module object with its own attribute hooks)."""
    before = torch.backends.cuda.matmul.allow_tf32

    def allow(allowed: bool) -> None:
        torch.backends.cuda.matmul.allow_tf32 = allowed

    yield allow
    torch.backends.cuda.matmul.allow_tf32 = before


def test_peak_is_none_on_cpu_unless_overridden():
    cpu = torch.device("cpu")
    assert peak_flops(cpu, "bf16") is None
    assert peak_flops(cpu, "bf16", override=5e12) == 5e12


@pytest.mark.parametrize(
    ("name", "precision", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", "bf16", 989e12),
        ("NVIDIA H100 80GB HBM3", "fp32", 67e12),
        ("NVIDIA H100 PCIe", "bf16", 756e12),
        ("NVIDIA H100 NVL", "bf16", 835e12),
        ("NVIDIA H100 NVL", "fp32", 60e12),
        ("NVIDIA H200", "bf16", 989e12),
        ("NVIDIA H200", "fp32", 67e12),
        ("NVIDIA H200 NVL", "bf16", 835e12),
        ("NVIDIA H200 NVL", "fp32", 60e12),
        ("NVIDIA A100-SXM4-80GB", "bf16", 312e12),
        ("NVIDIA A100-SXM4-80GB", "fp32", 19.5e12),
        ("NVIDIA GeForce RTX 4090", "bf16", None),
    ],
)
def test_peak_by_gpu_name(monkeypatch, tf32, name, precision, peak):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    tf32(False)
    assert peak_flops(torch.device("cuda", 0), precision) == peak


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", 494.5e12),
        ("NVIDIA H100 NVL", 417.5e12),
        ("NVIDIA H200", 494.5e12),
        ("NVIDIA H200 NVL", 417.5e12),
        ("NVIDIA A100-SXM4-80GB", 156e12),
    ],
)
def test_fp32_with_tf32_matmuls_is_measured_against_the_tf32_peak(monkeypatch, tf32, name, peak):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    tf32(True)
    assert peak_flops(torch.device("cuda", 0), "fp32") == peak
    assert peak_flops(torch.device("cuda", 0), "bf16") > peak  # bf16 keeps its own peak
