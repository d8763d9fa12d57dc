"""What ``lmpipe bench node`` measures with, and its defaults on a GPU and on a CPU.

Torch-free, so the CLI rejects a bad flag before torch is imported. The GPU defaults are the shape of
``bench/RESULTS.md``'s GPU table (the ``1.3b`` rung, seq 2048, vocabulary 32,000, bf16, micro-batch 8),
so a node's figures compare with those rows; the CPU defaults make the whole command take seconds (CI).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from pipeline.config.parallel import STRATEGIES
from pipeline.core.config import require, require_choice
from pipeline.model.ladder import SIZES


@dataclass(frozen=True)
class NodeBenchConfig:
    size: str
    """A rung of the ladder (``model.ladder.SIZES``)."""
    strategy: str
    compile: bool
    seconds: float
    """How long the timed training run lasts, warm-up and compilation excluded."""
    micro_batch: int
    seq_len: int
    vocab_size: int
    precision: str
    """Of the training run (``train.precision``) and of the matmul."""
    matmul_n: int
    all_reduce_mib: int
    warmup_steps: int
    """Untimed training steps first: the first steps allocate, autotune and (``compile``) compile."""

    def check(self) -> None:
        require_choice(self.size, "--size", SIZES)
        require_choice(self.strategy, "--strategy", STRATEGIES)
        require(self.seconds > 0, "--seconds", f"must be > 0, got {self.seconds}")
        require(self.micro_batch > 0, "--micro-batch", f"must be > 0, got {self.micro_batch}")
        require(self.seq_len > 0, "--seq-len", f"must be > 0, got {self.seq_len}")


GPU_DEFAULTS = NodeBenchConfig(
    size="1.3b",
    strategy="fsdp",
    compile=False,
    seconds=60.0,
    micro_batch=8,
    seq_len=2048,
    vocab_size=32_000,
    precision="bf16",
    matmul_n=8192,
    all_reduce_mib=256,
    warmup_steps=3,
)
CPU_DEFAULTS = NodeBenchConfig(
    size="tiny",
    strategy="fsdp",
    compile=False,
    seconds=3.0,
    micro_batch=4,
    seq_len=128,
    vocab_size=4096,
    precision="fp32",  # bf16 autocast on CPUs without AMX is ~20x slower than fp32 (train.precision)
    matmul_n=512,
    all_reduce_mib=8,
    warmup_steps=2,
)


def resolve(cuda: bool, **given: Any) -> NodeBenchConfig:
    """The defaults of this kind of device, with every ``given`` value that is not None; checked."""
    defaults = GPU_DEFAULTS if cuda else CPU_DEFAULTS
    config = dataclasses.replace(
        defaults, **{key: value for key, value in given.items() if value is not None}
    )
    config.check()
    return config
