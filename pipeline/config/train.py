"""Configs of pretraining: the data mixture, the optimisation loop, checkpoints, tracking, and the job.

Torch-free so that ``lmpipe`` can reject a bad config in a fraction of a second.
Each top-level ``*JobConfig`` is what one verb loads (``--config`` + overrides); the loop,
parallel, checkpoint and tracking sections are shared with fine-tuning.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from pipeline.config.model import ModelConfig
from pipeline.config.parallel import STRATEGY_TRAITS, ParallelConfig, strategies_with
from pipeline.core.config import Config, require, require_choice
from pipeline.core.errors import ConfigError
from pipeline.model.ladder import SIZES, default_batch_size, default_lr

PRECISIONS = ("fp32", "bf16")
SCHEDULES = ("cosine", "wsd")


@dataclass
class DataSourceConfig(Config):
    """One source of a training mixture: the train-split shards of a tokenize output, or of one
    ``source`` in it, drawn with probability ``weight / sum(weights)``."""

    shards: str = ""
    """A ``lmpipe data tokenize`` output directory; empty = ``data.shards``."""
    source: str = ""
    """Only the shards whose manifest ``source`` is this (e.g. ``cc``); empty = every shard of the split."""
    weight: float = 1.0

    def check(self, prefix: str) -> None:
        require(self.weight > 0, f"{prefix}weight", "must be > 0")


@dataclass
class DataConfig(Config):
    shards: str = ""
    """Directory written by ``lmpipe data tokenize`` (manifest.json + shards/)."""
    sources: dict[str, DataSourceConfig] = field(default_factory=dict)
    """A mixture, by name, e.g. ``{cc: {source: cc, weight: 0.7}, wiki: {source: wiki, weight: 0.3}}``;
    empty = one source, every train shard of ``shards``. Validation uses each source's val split."""
    train_split: str = "train"
    val_split: str = "val"
    val_windows: int = 128
    """Validation windows per source, evenly spaced over its val split: the same windows for every run
    (any world size or batch), so val losses compare across runs and sweeps."""
    train_eval_windows: int = 0
    """After the last step, the final weights' loss on the windows of the first this many global
    training samples (``train_eval/loss``, result.json ``final_train_eval_loss``); 0: off. Every run
    with the same seed and shards has trained on exactly these once it took that many samples, so
    val minus this loss is a train/val gap that compares across a sweep's runs, where the train loss
    of the last steps mixes batches seen under moving weights. Must not exceed the samples the run
    plans to take; a run that stops early evaluates the samples it took (it says so)."""
    unique_tokens: int = 0
    """Train on at most this many distinct tokens (0: the whole train split): a seeded random subset of
    ``unique_tokens // seq_len`` windows, shared over a mixture's sources by weight, that the loader's
    epochs repeat. A data-constrained run (Muennighoff et al. 2023): D tokens of U unique ones."""
    prefetch: int = 2
    """Batches built ahead in a background thread (0: none)."""
    verify_sha256: bool = True
    """Hash every shard against the manifest before training (about 1 s per GB); off for huge corpora."""
    doc_masking: bool = False
    """Attention stays within each document of a packed window (block-diagonal causal mask); validation
    keeps plain causal attention."""

    def check(self, prefix: str) -> None:
        require(
            bool(self.shards) or (bool(self.sources) and all(s.shards for s in self.sources.values())),
            f"{prefix}shards",
            "give the token shards directory",
        )
        require(self.val_windows > 0, f"{prefix}val_windows", "must be > 0")
        require(self.train_eval_windows >= 0, f"{prefix}train_eval_windows", "must be >= 0 (0: off)")
        require(self.unique_tokens >= 0, f"{prefix}unique_tokens", "must be >= 0 (0: the whole split)")
        require(self.prefetch >= 0, f"{prefix}prefetch", "must be >= 0 (0: no prefetch)")


@dataclass
class LoopConfig(Config):
    """The optimisation loop: steps, batch, AdamW, schedule, logging and validation cadence."""

    seed: int = 1234
    max_steps: int = 200
    max_tokens: int = 0
    """A token budget: train on exactly this many tokens (a whole number of steps of
    ``global_batch_size * seq_len`` tokens); when set, ``max_steps`` is not used. 0: no budget."""
    global_batch_size: Optional[int] = 16
    """Sequences per optimizer step, over all ranks; gradient accumulation makes up the rest.
    Pretraining's default (None) is the ladder's rule for the model's size (``ladder.default_batch_size``)."""
    micro_batch_size: int = 8
    """Sequences per forward pass on one rank."""
    lr: Optional[float] = 3e-3
    """Peak learning rate. Pretraining's default (None) is the
    ladder's rule for the model's size (``ladder.default_lr``)."""
    min_lr_ratio: float = 0.1
    warmup_steps: int = 20
    schedule: str = "cosine"
    """cosine: warmup, then a cosine down to ``min_lr_ratio``. wsd: warmup, constant, then a linear
    decay to ``min_lr_ratio`` over the last ``decay_fraction`` of the steps (warmup-stable-decay)."""
    decay_fraction: float = 0.2
    """wsd: the share of all steps spent decaying."""
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    precision: str = "fp32"
    """bf16 autocast is for GPUs; on CPUs without AMX it is ~20x slower than fp32."""
    log_interval: int = 10
    eval_interval: int = 100
    """Validate every this many steps and at the end (0: only at the end)."""
    eval_tasks: list[str] = field(default_factory=list)
    """Multiple-choice JSONL files (``lmpipe eval --mc``'s format) scored every ``eval_interval`` steps
    and at the end, logged as ``downstream/<file stem>/acc`` and ``acc_norm``."""
    eval_batches: int = 20
    """Fine-tuning: validation batches per evaluation (pretraining validates on ``data.val_windows``)."""
    early_stop_patience: int = 0
    """Stop when this many validations in a row (every ``eval_interval`` steps) have not improved on the
    best validation loss; 0: off. For fine-tuning on small sets, which overfit: pair it with
    ``checkpoint.keep_best`` so the best step's weights stay."""
    max_bad_steps: int = 3
    """Steps with a non-finite loss or gradient norm are skipped (no update, their data consumed);
    this many in a row stop the run with a checkpoint of the last good weights."""
    activation_checkpointing: bool = False
    """Recompute each transformer block's activations in backward: less memory, about 1/3 more compute."""
    compile: bool = False
    """``torch.compile`` each transformer block (ddp, fsdp, zero1 and zero2; not zero3)."""

    def check(self, prefix: str) -> None:
        require(self.max_steps > 0, f"{prefix}max_steps", "must be > 0")
        require(self.max_tokens >= 0, f"{prefix}max_tokens", "must be >= 0")
        require(self.micro_batch_size > 0, f"{prefix}micro_batch_size", "must be > 0")
        require(
            self.global_batch_size is not None and self.global_batch_size > 0,
            f"{prefix}global_batch_size",
            "must be > 0 (only pretraining derives a default from the model size)",
        )
        require(
            self.lr is not None and self.lr > 0,
            f"{prefix}lr",
            "must be > 0 (only pretraining derives a default from the model size)",
        )
        require(0.0 <= self.min_lr_ratio <= 1.0, f"{prefix}min_lr_ratio", "must be in [0, 1]")
        require(self.warmup_steps >= 0, f"{prefix}warmup_steps", "must be >= 0")
        require_choice(self.schedule, f"{prefix}schedule", SCHEDULES)
        require(0.0 < self.decay_fraction <= 1.0, f"{prefix}decay_fraction", "must be in (0, 1]")
        require(self.max_bad_steps > 0, f"{prefix}max_bad_steps", "must be > 0")
        require_choice(self.precision, f"{prefix}precision", PRECISIONS)
        require(self.log_interval > 0, f"{prefix}log_interval", "must be > 0")
        require(self.eval_interval >= 0, f"{prefix}eval_interval", "must be >= 0")
        require(self.eval_batches > 0, f"{prefix}eval_batches", "must be > 0")
        require(self.early_stop_patience >= 0, f"{prefix}early_stop_patience", "must be >= 0 (0: off)")
        require(
            not self.early_stop_patience or self.eval_interval > 0,
            f"{prefix}early_stop_patience",
            "needs train.eval_interval > 0 (it counts validations)",
        )
        stems = [Path(task).stem for task in self.eval_tasks]
        require(
            all(self.eval_tasks) and len(set(stems)) == len(stems),
            f"{prefix}eval_tasks",
            "give non-empty paths whose file names (without extension) differ: they name the metrics",
        )

    @property
    def batch(self) -> int:
        """``global_batch_size``, resolved (only pretraining leaves it unset, and its job fills it in)."""
        if self.global_batch_size is None:
            raise ConfigError("config error: train.global_batch_size: unset")
        return self.global_batch_size

    @property
    def peak_lr(self) -> float:
        """``lr``, resolved (only pretraining leaves it unset, and its job fills it in)."""
        if self.lr is None:
            raise ConfigError("config error: train.lr: unset")
        return self.lr

    def grad_accum_steps(self, world_size: int) -> int:
        """Micro-steps per optimizer step; rejects a global batch the ranks cannot split evenly."""
        per_step = self.micro_batch_size * world_size
        require(
            self.batch % per_step == 0,
            "train.global_batch_size",
            f"{self.global_batch_size} is not a multiple of micro_batch_size x world_size = {per_step}",
        )
        return self.batch // per_step


@dataclass
class CheckpointConfig(Config):
    interval: int = 0
    """Save every this many steps (0: only at the end). The final step is always saved."""
    keep: int = 2
    """Keep the newest this many step_N/ directories."""
    resume: str = "auto"
    """auto: continue from the newest complete checkpoint in output_dir when there is one (what a
    requeued job needs); never: refuse an output_dir that has checkpoints; or a step_N directory."""
    async_save: bool = False
    """ddp/fsdp: training pauses only to copy the state to host memory; a background thread writes
    it and completes the step directory (pipeline/train/checkpoint.py). Not for zero1-3."""
    keep_best: bool = False
    """Also keep the step with the lowest validation loss (``checkpoints/best`` names it), whatever
    ``keep`` prunes; only steps validated when saved count (``checkpoint.interval`` a multiple of
    ``train.eval_interval``)."""
    checksum_max_mb: int = 64
    """Files of a step up to this size get a blake2b checksum when saved, checked before a resume or a
    load; bigger ones (a large model's shards) only their size, so no save spends minutes hashing."""

    def check(self, prefix: str) -> None:
        require(self.interval >= 0, f"{prefix}interval", "must be >= 0")
        require(self.keep >= 1, f"{prefix}keep", "must be >= 1")
        require(self.checksum_max_mb >= 0, f"{prefix}checksum_max_mb", "must be >= 0 (0: sizes only)")
        require(bool(self.resume), f"{prefix}resume", "auto, never, or a checkpoint step directory")


def check_strategy_traits(
    checkpoint: CheckpointConfig, loop: LoopConfig, parallel: ParallelConfig, prefix: str
) -> None:
    """Options the strategy cannot honour are refused, not ignored, before anything is built (training and
    fine-tuning alike): ``checkpoint.async_save`` where DeepSpeed writes ZeRO's checkpoints itself,
    synchronously, and ``train.compile`` where ZeRO-3's hooks break the graphs (``StrategyTraits``)."""
    traits = STRATEGY_TRAITS.get(parallel.strategy)
    require(
        not checkpoint.async_save or traits is None or traits.async_save,
        f"{prefix}checkpoint.async_save",
        f"only for strategies {' and '.join(strategies_with('async_save'))} "
        f"(strategy is {parallel.strategy})",
    )
    require(
        not loop.compile or traits is None or traits.compile,
        f"{prefix}train.compile",
        f"only for strategies {', '.join(strategies_with('compile'))} (strategy is "
        f"{parallel.strategy}: DeepSpeed's ZeRO-3 parameter hooks break every block's graph)",
    )


@dataclass
class TrackingConfig(Config):
    enabled: bool = True
    uri: str = ""
    """MLflow tracking URI; empty: $MLFLOW_TRACKING_URI, else sqlite:///<output_dir>/mlflow.db."""
    experiment: str = "lmpipe"
    run_name: str = ""
    system_metrics: bool = True
    """Log this process's memory (``memory/rss_gb``,
    ``memory/cuda_max_allocated_gb``) with the train metrics."""
    peak_flops: float = 0.0
    """Peak FLOP/s of one device for MFU; 0: looked up from
    the GPU's name (pipeline/mfu.py), none on a CPU."""
    parent_run_id: str = ""
    """A new run is made a child of this MLflow run (a
    sweep's parent run, ``lmpipe sweep run``); empty: none."""
    flush_timeout_s: float = 60.0
    """At the end of a job (or a preemption), wait at most this long for the store to take the queued
    metrics; what it has not taken then is kept in ``<output_dir>/mlflow_unsent.jsonl`` for
    ``lmpipe tracking replay``. Training itself never waits on the store."""

    def check(self, prefix: str) -> None:
        require(self.peak_flops >= 0, f"{prefix}peak_flops", "must be >= 0 (0: detect from the GPU)")
        require(self.flush_timeout_s >= 0, f"{prefix}flush_timeout_s", "must be >= 0")

    def resolve_uri(self, output_dir: str) -> str:
        if self.uri:
            return self.uri
        return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(output_dir).resolve()}/mlflow.db"


def _pretrain_loop() -> LoopConfig:
    return LoopConfig(lr=None, global_batch_size=None)


@dataclass
class TrainJobConfig(Config):
    """``lmpipe train``: pretrain a ladder model on token shards.

    Learning rate and global batch left unset come from the model's size by the ladder's rules,
    and are stored resolved (checkpoint config, MLflow params) like every other value.
    """

    output_dir: str = "runs/train"
    init_from: str = ""
    """Continued pretraining: start from these weights (a step_N/ directory or a training output dir,
    of the same model shape and tokenizer; seq_len may differ) with a fresh optimizer, schedule and
    loader. Empty: a fresh init. A checkpoint of this run's own in output_dir still resumes first."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: LoopConfig = field(default_factory=_pretrain_loop)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self) -> None:
        if self.model.size not in SIZES:
            return  # validate() names the bad size
        n_params = self.model.args().non_embedding_params()
        if self.train.lr is None:
            self.train.lr = default_lr(n_params)
        if self.train.global_batch_size is None:
            self.train.global_batch_size = default_batch_size(n_params, self.model.seq_len)

    def check(self, prefix: str) -> None:
        require_choice(
            self.model.size, f"{prefix}model.size", SIZES
        )  # before the batch rule's values are used
        check_strategy_traits(self.checkpoint, self.train, self.parallel, prefix)
        require(
            not self.init_from or Path(self.init_from).resolve() != Path(self.output_dir).resolve(),
            f"{prefix}init_from",
            "is this run's own output_dir; to continue it, leave init_from empty (checkpoint.resume=auto)",
        )
        batch = self.train.global_batch_size or 0  # the loop's own check names an unset or bad one
        per_step = batch * self.model.seq_len
        budget = self.train.max_tokens
        if budget and batch > 0 and self.model.seq_len > 0:
            lower = budget // per_step * per_step
            nearest = " or ".join(str(n) for n in (lower, lower + per_step) if n > 0)
            require(
                budget % per_step == 0,
                f"{prefix}train.max_tokens",
                f"{budget} is not a whole number of steps of global_batch_size x seq_len = "
                f"{per_step} tokens; nearest: {nearest}",
            )
        require(
            not self.data.unique_tokens or self.data.unique_tokens >= self.model.seq_len,
            f"{prefix}data.unique_tokens",
            f"{self.data.unique_tokens} is less than one window of seq_len = {self.model.seq_len} tokens",
        )
        if self.data.train_eval_windows and batch > 0 and self.model.seq_len > 0:
            samples = budget // self.model.seq_len if budget else self.train.max_steps * batch
            require(  # refused, not clamped: a subset cut to fit this run would differ from its siblings'
                self.data.train_eval_windows <= samples,
                f"{prefix}data.train_eval_windows",
                f"{self.data.train_eval_windows} is more than the {samples} samples this run trains on; "
                "the subset must be windows every run of a sweep has trained on",
            )
