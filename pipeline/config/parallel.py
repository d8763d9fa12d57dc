"""The ``parallel`` section of a job config: which strategy spreads the model over ranks, and its options.

Torch-free, like every config module, so a bad strategy fails before torch is imported.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from pipeline.core.config import Config, require, require_choice
from pipeline.model.args import ModelArgs


@dataclass(frozen=True)
class StrategyTraits:
    """What a strategy can do, known before torch is imported. Each ``ParallelModel`` class declares the
    same values as class attributes (a unit test holds them equal), so config checks and the process-group
    set-up ask this table rather than test strategy names."""

    checkpoint_format: str
    """``dcp`` (torch.distributed.checkpoint) or ``deepspeed``:
    checkpoints resume only in their own format."""
    async_save: bool
    """``checkpoint.async_save`` can write its checkpoints in the background."""
    needs_process_group: bool
    """One process gets a process group of one rank (ddp alone runs as the plain module without)."""
    compile: bool = True
    """``train.compile`` compiles its blocks into whole graphs. Not ZeRO-3: DeepSpeed gathers each block's
    parameters in hooks it marks ``torch.compiler.disable``, so every block breaks the graph and
    recompiles until dynamo's limit (measured); DeepCompile, which avoids that, needs DeepSpeed's native
    ops."""
    options: tuple[str, ...] = ()
    """The ``ParallelConfig`` options that are for this strategy."""


_ZERO_OPTIONS = ("zero_offload_optimizer",)
STRATEGY_TRAITS: dict[str, StrategyTraits] = {
    "ddp": StrategyTraits("dcp", async_save=True, needs_process_group=False, options=("tp",)),
    "fsdp": StrategyTraits(
        "dcp",
        async_save=True,
        needs_process_group=True,
        options=("fsdp_reshard_after_forward", "fsdp_cpu_offload", "dp_replicate", "tp"),
    ),
    "zero1": StrategyTraits("deepspeed", async_save=False, needs_process_group=True, options=_ZERO_OPTIONS),
    "zero2": StrategyTraits("deepspeed", async_save=False, needs_process_group=True, options=_ZERO_OPTIONS),
    "zero3": StrategyTraits(
        "deepspeed",
        async_save=False,
        needs_process_group=True,
        compile=False,
        options=(*_ZERO_OPTIONS, "zero_offload_params"),
    ),
}
STRATEGIES = tuple(STRATEGY_TRAITS)
DEFAULT_TIMEOUT_S = 1800.0
"""How long a collective waits by default: 30 minutes, not torch's 10 for nccl, because rank 0 alone does
work between collectives that takes minutes on a large job (hashing every shard before the first step,
converting a ZeRO checkpoint to the universal format on resume, consolidating the weights on save) while
the other ranks wait in their next collective."""


def strategies_with(predicate: str) -> list[str]:
    """The strategies whose trait ``predicate`` is true
    (``async_save``, ``compile``), or that take option ``predicate``."""
    return [
        name
        for name, traits in STRATEGY_TRAITS.items()
        if predicate in traits.options or getattr(traits, predicate, False) is True
    ]


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
    ZeRO state written by another number of ranks is
    converted once to DeepSpeed's universal checkpoint."""
    backend: str = "auto"
    """auto: nccl on CUDA, gloo on CPU."""
    timeout_seconds: float = DEFAULT_TIMEOUT_S
    """How long a collective waits for a rank that does not come (one that died) before the job fails
    with the rank named. Never torch's default (10 minutes on nccl), which rank 0's own work between
    collectives can outlast: 0, as configs saved before this default existed say, means
    ``DEFAULT_TIMEOUT_S`` too; a shorter value finds a dead rank sooner."""
    fsdp_reshard_after_forward: bool = True
    """fsdp: free each block's gathered weights after its forward and gather again for backward
    (least memory); False keeps them until backward (one gather fewer per step)."""
    fsdp_cpu_offload: bool = False
    """fsdp: keep the sharded weights, gradients and optimizer step in host memory."""
    zero_offload_optimizer: bool = False
    """zero1-3: optimizer state and step on the CPU (ZeRO-Offload)."""
    zero_offload_params: bool = False
    """zero3: parameters in host memory too (ZeRO-Infinity on CPU)."""
    tp: int = 1
    """ddp, fsdp: tensor parallelism over groups of this many consecutive ranks (Megatron-style: attention
    heads, SwiGLU's hidden units and the vocabulary split, norms sequence-parallel); the world is split
    into world_size / tp data-parallel replicas, each rank of a group reading the same batch. 1: none."""
    dp_replicate: int = 1
    """fsdp: HSDP, shard each weight within groups of world_size / (dp_replicate x tp) ranks and replicate
    it over dp_replicate such groups (gradients all-reduced between them). 1: shard over all ranks."""

    def check(self, prefix: str) -> None:
        require_choice(self.strategy, f"{prefix}strategy", STRATEGIES)
        require_choice(self.backend, f"{prefix}backend", ("auto", "gloo", "nccl"))
        require(
            self.timeout_seconds >= 0,
            f"{prefix}timeout_seconds",
            f"must be >= 0 (0: {DEFAULT_TIMEOUT_S:g}), got {self.timeout_seconds}",
        )
        require(self.tp >= 1, f"{prefix}tp", f"must be >= 1, got {self.tp}")
        require(self.dp_replicate >= 1, f"{prefix}dp_replicate", f"must be >= 1, got {self.dp_replicate}")
        defaults = ParallelConfig()
        for key in (f.name for f in fields(self) if f.name not in ("strategy", "backend", "timeout_seconds")):
            require(
                getattr(self, key) == getattr(defaults, key) or key in STRATEGY_TRAITS[self.strategy].options,
                f"{prefix}{key}",
                f"only for strategy {'/'.join(strategies_with(key))} (strategy is {self.strategy})",
            )

    def dp_size(self, world_size: int) -> int:
        """Data-parallel replicas: ranks that read different batches (a tensor-parallel group reads one)."""
        return world_size // self.tp

    def dp_rank(self, rank: int) -> int:
        """This rank's data-parallel index: tensor-parallel groups are consecutive ranks
        (``parallel.mesh``, tp the innermost mesh dimension), so every rank of one gets the same."""
        return rank // self.tp

    def check_layout(self, *, world_size: int, model: ModelArgs, prefix: str = "parallel.") -> None:
        """The ranks and the model's shape fit the layout, checked before any set-up: the world splits into
        dp_replicate x shard x tp ranks, and tensor parallelism splits heads (query and key/value: GQA
        keeps its grouping per rank), SwiGLU's hidden units, the vocabulary and (sequence parallel) the
        sequence evenly."""
        ranks_per_replica = self.tp * self.dp_replicate
        require(
            world_size % ranks_per_replica == 0,
            f"{prefix}{'tp' if self.dp_replicate == 1 else 'dp_replicate'}",
            f"world_size {world_size} is not a multiple of tp x dp_replicate = {ranks_per_replica}",
        )
        for field_name in ("n_heads", "n_kv_heads", "ffn_hidden", "vocab_size", "seq_len"):
            value = getattr(model, field_name)
            require(
                value % self.tp == 0,
                f"{prefix}tp",
                f"model.{field_name} {value} is not a multiple of tp {self.tp}"
                + ("; pad it with model.vocab_size" if field_name == "vocab_size" else ""),
            )
