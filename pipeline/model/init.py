"""The model's initial weights, one parameter at a time: each drawn from a generator of its own.

A parameter's generator is seeded from (the run's seed, the parameter's name), so its values depend on
nothing else: not on the parameters drawn before it, not on LoRA adapters beside it, not on how a strategy
lays the model out. That is what lets ``pipeline.parallel.init`` draw each rank's shards without ever
holding the whole model, and still give every strategy, world size and layout the same starting weights.
Draws happen on the CPU (CUDA's generators draw other numbers).

The rules: N(0, 0.02); the projections that write into the residual stream N(0, 0.02 / sqrt(2 n_layers)),
so the stream's variance does not grow with depth (GPT-2); norms one; a LoRA ``lora_A`` kaiming-uniform
(a = sqrt(5), as ``peft`` and ``nn.Linear`` draw it) and ``lora_B`` zero, so an adapter starts at exactly 0.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable

import torch
from torch import nn

RESIDUAL_PROJECTIONS = ("wo.weight", "w2.weight")
"""The projections that write into the residual stream: their std shrinks with depth."""
STD = 0.02


def parameter_seed(seed: int, name: str) -> int:
    """A generator seed for parameter ``name``: a stable hash (Python's ``hash`` is salted per process), so
    every rank and every run of the same seed draws the same numbers for it."""
    digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # 63 bits: what manual_seed takes on every torch


def _rule(name: str, n_layers: int) -> Callable[[torch.Tensor, torch.Generator], object]:
    """How parameter ``name`` is drawn, in place, from its generator."""
    if name.endswith("norm.weight"):
        return lambda t, g: nn.init.ones_(t)
    if name.endswith("lora_A"):
        return lambda t, g: nn.init.kaiming_uniform_(t, a=math.sqrt(5), generator=g)
    if name.endswith("lora_B"):
        return lambda t, g: nn.init.zeros_(t)
    std = STD / math.sqrt(2 * n_layers) if name.endswith(RESIDUAL_PROJECTIONS) else STD
    return lambda t, g: nn.init.normal_(t, mean=0.0, std=std, generator=g)


def full_parameter(name: str, shape: torch.Size, *, seed: int, n_layers: int) -> torch.Tensor:
    """The whole initial fp32 tensor of parameter ``name`` (the plain model's name), drawn on the CPU."""
    generator = torch.Generator(device="cpu").manual_seed(parameter_seed(seed, name))
    full = torch.empty(shape, dtype=torch.float32)
    _rule(name, n_layers)(full, generator)
    return full
