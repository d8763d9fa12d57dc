"""The ``parallel`` section of a job config: which strategy spreads the model over ranks, and its options.

Torch-free, like every config module, so a bad strategy fails before torch is imported.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.config import Config, require, require_choice

STRATEGIES = ("ddp", "fsdp", "zero1", "zero2", "zero3")


@dataclass
class ParallelConfig(Config):
    """The strategy and its options; an option is for one strategy (or family) only, and setting it
    for another is an error rather than silently ignored. Mixed precision is not set here: it
    follows ``train.precision`` (bf16: bf16 compute, fp32 master weights and gradient reduction)."""

    strategy: str = "ddp"
    """ddp: replicated weights. fsdp: FSDP2, every block sharded. zero1/zero2/zero3: DeepSpeed ZeRO
    (optimizer state / + gradients / + parameters partitioned). Every strategy also runs in one
    process without torchrun (ddp as the plain module, the others over a process group of one
    rank), and a checkpoint resumes on any number of processes: DCP reshards ddp/fsdp state, and
    ZeRO state written by another number of ranks is converted once to DeepSpeed's universal
    checkpoint."""
    backend: str = "auto"
    """auto: nccl on CUDA, gloo on CPU."""
    fsdp_reshard_after_forward: bool = True
    """fsdp: free each block's gathered weights after its forward and gather again for backward
    (least memory); False keeps them until backward (one gather fewer per step)."""
    fsdp_cpu_offload: bool = False
    """fsdp: keep the sharded weights, gradients and optimizer step in host memory."""
    zero_offload_optimizer: bool = False
    """zero1-3: optimizer state and step on the CPU (ZeRO-Offload)."""
    zero_offload_params: bool = False
    """zero3: parameters in host memory too (ZeRO-Infinity on CPU)."""

    def check(self, prefix: str) -> None:
        require_choice(self.strategy, f"{prefix}strategy", STRATEGIES)
        require_choice(self.backend, f"{prefix}backend", ("auto", "gloo", "nccl"))
        defaults = ParallelConfig()
        for key, strategies, label in (
            ("fsdp_reshard_after_forward", ("fsdp",), "fsdp"),
            ("fsdp_cpu_offload", ("fsdp",), "fsdp"),
            ("zero_offload_optimizer", ("zero1", "zero2", "zero3"), "zero1/zero2/zero3"),
            ("zero_offload_params", ("zero3",), "zero3"),
        ):
            require(
                getattr(self, key) == getattr(defaults, key) or self.strategy in strategies,
                f"{prefix}{key}",
                f"only for strategy {label} (strategy is {self.strategy})",
            )
