"""The memory of this machine's GPU, the one place ``plan`` touches torch (imported only when asked)."""

from __future__ import annotations

ASSUMED_GPU_GIB = 80.0
"""What a launch plans against when the GPUs are on other machines (a Slurm login node): an
H100's or A100's 80 GB; ``lmpipe plan memory --device-memory`` checks another size."""


def detected_memory() -> tuple[float, str] | None:
    """(bytes, the device's name) of CUDA device 0; None without torch or CUDA."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    properties = torch.cuda.get_device_properties(0)
    return float(properties.total_memory), properties.name
