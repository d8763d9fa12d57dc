"""Model FLOPs utilisation: the share of a device's peak FLOP/s that the model's own arithmetic uses.

Counted from the model's shape, not measured, so recomputation, padding or a slow kernel
lower MFU instead of inflating it. Peaks are dense (no sparsity) datasheet numbers.
"""

from __future__ import annotations

import torch

PEAK_FLOPS: dict[str, dict[str, float]] = {
    # Fragment of torch.cuda.get_device_name() -> dense peak FLOP/s: bf16 and TF32 tensor cores (half the
    # datasheets' "with sparsity" figures), fp32 without TF32. The longest fragment in the name wins, so
    # "NVIDIA H100 NVL" is an H100 NVL, not the SXM part that "NVIDIA H100 80GB HBM3" names.
    "H100 PCIe": {"bf16": 756e12, "tf32": 378e12, "fp32": 51e12},
    "H100 NVL": {"bf16": 835e12, "tf32": 417.5e12, "fp32": 60e12},
    "H100": {"bf16": 989e12, "tf32": 494.5e12, "fp32": 67e12},  # SXM
    "H200 NVL": {"bf16": 835e12, "tf32": 417.5e12, "fp32": 60e12},
    "H200": {"bf16": 989e12, "tf32": 494.5e12, "fp32": 67e12},  # SXM ("NVIDIA H200"): the H100 SXM's
    "A100": {"bf16": 312e12, "tf32": 156e12, "fp32": 19.5e12},
}


def flops_per_token(
    n_params: int, n_layers: int, d_model: int, seq_len: int, *, vocab_size: int = 0
) -> float:
    """Training FLOPs per token, forward + backward: 6N + 12·L·d·T (PaLM, Chowdhery et al. 2022, appendix B).

    ``n_params`` is the non-embedding count; ``vocab_size`` adds the output head's matmul (6·V·d),
    which the embedding lookup does not have but the head does, tied or not.
    """
    return 6 * (n_params + vocab_size * d_model) + 12 * n_layers * d_model * seq_len


def peak_flops(device: torch.device, precision: str, *, override: float = 0.0) -> float | None:
    """One device's peak FLOP/s: ``override`` if set, else the table's entry for this GPU, else None
    (a CPU, or a GPU the table does not know). ``fp32`` with TF32 matmuls allowed is measured against
    the TF32 peak, the arithmetic those matmuls then run at (several times the fp32 one)."""
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    fragment = max((fragment for fragment in PEAK_FLOPS if fragment in name), key=len, default=None)
    if fragment is None:
        return None
    if precision == "fp32" and torch.backends.cuda.matmul.allow_tf32:
        precision = "tf32"
    return PEAK_FLOPS[fragment][precision]


def mfu(tokens_per_s_per_device: float, flops_per_token: float, peak: float | None) -> float | None:
    """Achieved over peak FLOP/s of one device (0-1), or None without a peak."""
    return None if peak is None else tokens_per_s_per_device * flops_per_token / peak
