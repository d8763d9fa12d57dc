"""Configs of the training-side verbs: train, finetune, eval, generate.

Torch-free so that ``lmpipe`` can reject a bad config in a fraction of a second.
Each top-level ``*JobConfig`` is what one verb loads (``--config`` + overrides).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from pipeline.config import Config, require, require_choice
from pipeline.ladder import SIZES, ModelShape, default_batch_size, default_lr

STRATEGIES = ("ddp", "fsdp", "zero1", "zero2", "zero3")
PRECISIONS = ("fp32", "bf16")
SCHEDULES = ("cosine", "wsd")
SFT_OVERLONG = ("truncate", "drop")
SFT_FIELDS = ("prompt", "response", "messages", "role", "content")
"""What ``data.columns`` can rename: a record's fields, then the keys inside each of its messages."""
SFT_ROLES = ("system", "user", "assistant")
LORA_TARGETS = ("wq", "wk", "wv", "wo", "w1", "w2", "w3")
"""The Linear projections inside a transformer block (``model.Attention``'s wq/wk/wv/wo, ``model.FeedForward``'s
w1 gate, w3 up, w2 down); spelled out here so a bad name fails before torch is imported."""


@dataclass
class ModelConfig(Config):
    size: str = "tiny"
    """A rung of the ladder (pipeline/ladder.py); the fields below override its shape."""
    d_model: Optional[int] = None
    n_layers: Optional[int] = None
    n_heads: Optional[int] = None
    n_kv_heads: Optional[int] = None
    vocab_size: Optional[int] = None
    """None: taken from the token shards' manifest."""
    seq_len: int = 256
    tie_embeddings: bool = True
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5

    def shape(self) -> ModelShape:
        base = SIZES[self.size]
        n_heads = self.n_heads or base.n_heads
        return ModelShape(
            d_model=self.d_model or base.d_model,
            n_layers=self.n_layers or base.n_layers,
            n_heads=n_heads,
            n_kv_heads=self.n_kv_heads or (base.n_kv_heads if self.n_heads is None else n_heads),
        )

    def check(self, prefix: str) -> None:
        require_choice(self.size, f"{prefix}size", SIZES)
        shape = self.shape()
        for key in ("d_model", "n_layers", "n_heads", "n_kv_heads", "vocab_size"):
            value = getattr(self, key)
            require(value is None or value > 0, f"{prefix}{key}", "must be > 0")
        require(shape.d_model % shape.n_heads == 0, f"{prefix}n_heads",
                f"{shape.n_heads} does not divide d_model={shape.d_model}")
        require(shape.head_dim % 2 == 0, f"{prefix}n_heads", "d_model / n_heads must be even for RoPE")
        require(shape.n_heads % shape.n_kv_heads == 0, f"{prefix}n_kv_heads",
                f"{shape.n_kv_heads} does not divide n_heads={shape.n_heads}")
        require(self.seq_len > 0, f"{prefix}seq_len", "must be > 0")


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
    prefetch: int = 2
    """Batches built ahead in a background thread (0: none)."""
    verify_sha256: bool = True
    """Hash every shard against the manifest before training (about 1 s per GB); off for huge corpora."""
    doc_masking: bool = False
    """Attention stays within each document of a packed window (block-diagonal causal mask); validation
    keeps plain causal attention."""

    def check(self, prefix: str) -> None:
        require(bool(self.shards) or (bool(self.sources) and all(s.shards for s in self.sources.values())),
                f"{prefix}shards", "give the token shards directory")
        require(self.val_windows > 0, f"{prefix}val_windows", "must be > 0")
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
    """Peak learning rate. Pretraining's default (None) is the ladder's rule for the model's size
    (``ladder.default_lr``)."""
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
    eval_batches: int = 20
    """Fine-tuning: validation batches per evaluation (pretraining validates on ``data.val_windows``)."""
    max_bad_steps: int = 3
    """Steps with a non-finite loss or gradient norm are skipped (no update, their data consumed);
    this many in a row stop the run with a checkpoint of the last good weights."""
    activation_checkpointing: bool = False
    """Recompute each transformer block's activations in backward: less memory, about 1/3 more compute."""
    compile: bool = False
    """``torch.compile`` each transformer block (ddp and fsdp)."""

    def check(self, prefix: str) -> None:
        require(self.max_steps > 0, f"{prefix}max_steps", "must be > 0")
        require(self.max_tokens >= 0, f"{prefix}max_tokens", "must be >= 0")
        require(self.micro_batch_size > 0, f"{prefix}micro_batch_size", "must be > 0")
        require(self.global_batch_size is not None and self.global_batch_size > 0, f"{prefix}global_batch_size",
                "must be > 0 (only pretraining derives a default from the model size)")
        require(self.lr is not None and self.lr > 0, f"{prefix}lr",
                "must be > 0 (only pretraining derives a default from the model size)")
        require(0.0 <= self.min_lr_ratio <= 1.0, f"{prefix}min_lr_ratio", "must be in [0, 1]")
        require(self.warmup_steps >= 0, f"{prefix}warmup_steps", "must be >= 0")
        require_choice(self.schedule, f"{prefix}schedule", SCHEDULES)
        require(0.0 < self.decay_fraction <= 1.0, f"{prefix}decay_fraction", "must be in (0, 1]")
        require(self.max_bad_steps > 0, f"{prefix}max_bad_steps", "must be > 0")
        require_choice(self.precision, f"{prefix}precision", PRECISIONS)
        require(self.log_interval > 0, f"{prefix}log_interval", "must be > 0")
        require(self.eval_interval >= 0, f"{prefix}eval_interval", "must be >= 0")
        require(self.eval_batches > 0, f"{prefix}eval_batches", "must be > 0")

    def grad_accum_steps(self, world_size: int) -> int:
        """Micro-steps per optimizer step; rejects a global batch the ranks cannot split evenly."""
        per_step = self.micro_batch_size * world_size
        require(self.global_batch_size % per_step == 0, "train.global_batch_size",
                f"{self.global_batch_size} is not a multiple of micro_batch_size x world_size = {per_step}")
        return self.global_batch_size // per_step


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
        for key, strategies, label in (("fsdp_reshard_after_forward", ("fsdp",), "fsdp"),
                                       ("fsdp_cpu_offload", ("fsdp",), "fsdp"),
                                       ("zero_offload_optimizer", ("zero1", "zero2", "zero3"), "zero1/zero2/zero3"),
                                       ("zero_offload_params", ("zero3",), "zero3")):
            require(getattr(self, key) == getattr(defaults, key) or self.strategy in strategies, f"{prefix}{key}",
                    f"only for strategy {label} (strategy is {self.strategy})")


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
    it and completes the step directory (pipeline/checkpoint.py). Not for zero1-3."""

    def check(self, prefix: str) -> None:
        require(self.interval >= 0, f"{prefix}interval", "must be >= 0")
        require(self.keep >= 1, f"{prefix}keep", "must be >= 1")
        require(bool(self.resume), f"{prefix}resume", "auto, never, or a checkpoint step directory")


def check_async_save(checkpoint: CheckpointConfig, parallel: ParallelConfig, prefix: str) -> None:
    """DeepSpeed writes ZeRO checkpoints itself, synchronously: async_save is refused there, not ignored."""
    require(not checkpoint.async_save or not parallel.strategy.startswith("zero"), f"{prefix}checkpoint.async_save",
            f"only for strategies ddp and fsdp (strategy is {parallel.strategy})")


@dataclass
class TrackingConfig(Config):
    enabled: bool = True
    uri: str = ""
    """MLflow tracking URI; empty: $MLFLOW_TRACKING_URI, else sqlite:///<output_dir>/mlflow.db."""
    experiment: str = "lmpipe"
    run_name: str = ""
    system_metrics: bool = True
    """Log this process's memory (``memory/rss_gb``, ``memory/cuda_max_allocated_gb``) with the train metrics."""
    peak_flops: float = 0.0
    """Peak FLOP/s of one device for MFU; 0: looked up from the GPU's name (pipeline/mfu.py), none on a CPU."""
    parent_run_id: str = ""
    """A new run is made a child of this MLflow run (a sweep's parent run, ``lmpipe sweep run``); empty: none."""

    def check(self, prefix: str) -> None:
        require(self.peak_flops >= 0, f"{prefix}peak_flops", "must be >= 0 (0: detect from the GPU)")

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
        n_params = self.model.shape().non_embedding_params()
        if self.train.lr is None:
            self.train.lr = default_lr(n_params)
        if self.train.global_batch_size is None:
            self.train.global_batch_size = default_batch_size(n_params, self.model.seq_len)

    def check(self, prefix: str) -> None:
        require_choice(self.model.size, f"{prefix}model.size", SIZES)  # before the batch rule's values are used
        check_async_save(self.checkpoint, self.parallel, prefix)
        require(not self.init_from or Path(self.init_from).resolve() != Path(self.output_dir).resolve(),
                f"{prefix}init_from", "is this run's own output_dir; to continue it, leave init_from empty "
                "(checkpoint.resume=auto)")
        per_step = self.train.global_batch_size * self.model.seq_len
        budget = self.train.max_tokens
        if budget and self.train.global_batch_size > 0 and self.model.seq_len > 0:
            lower = budget // per_step * per_step
            nearest = " or ".join(str(n) for n in (lower, lower + per_step) if n > 0)
            require(budget % per_step == 0, f"{prefix}train.max_tokens",
                    f"{budget} is not a whole number of steps of global_batch_size x seq_len = {per_step} tokens; "
                    f"nearest: {nearest}")


@dataclass
class SFTDataConfig(Config):
    """Where the fine-tuning conversations come from and how they become rows (``pipeline.sft_data``)."""

    path: str = ""
    """Records {"prompt", "response"}, {"messages": [{"role", "content"}, ...]} or ShareGPT's
    {"conversations": [{"from", "value"}, ...]}: a .jsonl, .json, .parquet or .arrow file, or a
    directory written by ``datasets`` ``save_to_disk``; local only."""
    columns: dict[str, str] = field(default_factory=dict)
    """Our field -> the data's name for it, e.g. ``{prompt: instruction, response: output}``, or
    ``{messages: turns, role: speaker, content: text}`` (``role`` and ``content`` are the keys inside
    each message). Unnamed: prompt, response; messages or conversations; role or from; content or value."""
    roles: dict[str, str] = field(default_factory=dict)
    """The data's role name -> ours (system, user or assistant), e.g. ``{bot: assistant}``; added to
    the names known without it: ours, and ShareGPT's human (user) and gpt (assistant). A message with
    any other role makes its record bad (counted and skipped)."""
    split: str = "train"
    """The split of a saved DatasetDict to read (the val examples are still drawn by ``val_fraction``)."""
    val_fraction: float = 0.05
    overlong: str = "truncate"
    """An example longer than the model's seq_len: ``truncate`` (cut; dropped if nothing learned is
    left) or ``drop``. Both are counted and printed."""
    packing: bool = False
    """Several examples per seq_len row (attention kept within each); validation rows stay one example each."""

    def check(self, prefix: str) -> None:
        require(bool(self.path), f"{prefix}path", "give the fine-tuning data (a .jsonl file or a datasets directory)")
        require(0.0 <= self.val_fraction < 1.0, f"{prefix}val_fraction", "must be in [0, 1)")
        require_choice(self.overlong, f"{prefix}overlong", SFT_OVERLONG)
        unknown = sorted(set(self.columns) - set(SFT_FIELDS))
        require(not unknown, f"{prefix}columns", f"unknown field {', '.join(unknown)}; map any of "
                f"{', '.join(SFT_FIELDS)} to a column name")
        require(all(isinstance(name, str) and name for name in self.columns.values()), f"{prefix}columns",
                "a column name must not be empty")
        wrong = sorted(f"{theirs} -> {ours!r}" for theirs, ours in self.roles.items() if ours not in SFT_ROLES)
        require(not wrong, f"{prefix}roles", f"{', '.join(wrong)}: a role maps to one of {', '.join(SFT_ROLES)}")


@dataclass
class LoRAConfig(Config):
    """Low-rank adapters (``pipeline.lora``): the pretrained weights stay frozen and only
    ``B @ A`` (rank ``rank``) beside each targeted projection trains; merged into the weights on export."""

    rank: int = 0
    """Rank r of each adapter; 0: no LoRA, every weight trains."""
    alpha: float = 16.0
    """The adapter's output is scaled by alpha / rank (so changing the rank needs no new lr)."""
    dropout: float = 0.0
    """Dropout on the adapters' input while training. Above 0 it draws random numbers that checkpoints do not
    keep: a resumed run then continues the same statistics, not the same losses."""
    targets: list[str] = field(default_factory=lambda: ["wq", "wk", "wv", "wo"])
    """Which projections of every block get adapters (``LORA_TARGETS``); default the attention's."""

    def check(self, prefix: str) -> None:
        require(self.rank >= 0, f"{prefix}rank", f"must be >= 0 (0: no LoRA), not {self.rank}")
        require(self.alpha > 0, f"{prefix}alpha", "must be > 0")
        require(0.0 <= self.dropout < 1.0, f"{prefix}dropout", "must be in [0, 1)")
        unknown = [name for name in self.targets if name not in LORA_TARGETS]
        require(not unknown, f"{prefix}targets", f"unknown projection {', '.join(map(repr, unknown))}; "
                f"valid: {', '.join(LORA_TARGETS)}")
        require(bool(self.targets), f"{prefix}targets", f"name at least one of {', '.join(LORA_TARGETS)}")
        require(len(set(self.targets)) == len(self.targets), f"{prefix}targets", "names a projection twice")

    @property
    def enabled(self) -> bool:
        return self.rank > 0


def _finetune_loop() -> LoopConfig:
    return LoopConfig(max_steps=60, lr=1e-3, warmup_steps=5, eval_interval=0, eval_batches=10)


@dataclass
class FinetuneJobConfig(Config):
    """``lmpipe finetune``: supervised fine-tuning from a pretrained checkpoint, loss on responses only."""

    init_from: str = ""
    """A checkpoint directory (step_N/) or a training output dir (its latest checkpoint is used)."""
    output_dir: str = "runs/finetune"
    data: SFTDataConfig = field(default_factory=SFTDataConfig)
    train: LoopConfig = field(default_factory=_finetune_loop)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def check(self, prefix: str) -> None:
        require(bool(self.init_from), f"{prefix}init_from", "give the pretrained checkpoint (--init-from)")
        check_async_save(self.checkpoint, self.parallel, prefix)


@dataclass
class EvalTrackingConfig(Config):
    """Where ``lmpipe eval`` logs its metrics: the checkpoint's own MLflow run by default."""

    enabled: bool = True
    uri: str = ""
    """Empty: the checkpoint's store, found as its job found it (its config's ``tracking.uri``, else
    $MLFLOW_TRACKING_URI, else sqlite:///<its output dir>/mlflow.db)."""
    new_run: bool = False
    """Log to a new run of ``experiment``, tagged with the checkpoint, rather than to the checkpoint's
    run (a checkpoint whose job had no run always gets a new one)."""
    experiment: str = "eval"


@dataclass
class EvalJobConfig(Config):
    """``lmpipe eval``: a checkpoint's loss, perplexity and bits per byte on token shards or raw text,
    its held-out instruction loss, multiple-choice accuracy; logged to MLflow at the checkpoint's step."""

    checkpoint: str = ""
    shards: str = ""
    """Token shards directory: its ``split`` is scored per manifest source."""
    split: str = "val"
    """Shards only."""
    text: str = ""
    """Raw text instead of shards: a .txt file (one document) or a .jsonl with a ``text`` field per line."""
    name: str = ""
    """Metrics of the shards or text go under ``eval/<name>/``; empty: the split, or the text file's stem."""
    sft: str = ""
    """Fine-tuning data (what ``finetune`` takes as ``data.path``): the loss on the responses of its
    held-out (val) examples."""
    sft_val_fraction: Optional[float] = None
    """The held-out share; None: as the fine-tune that wrote the checkpoint split its data (its other
    ``data`` settings are followed too), else fine-tuning's default."""
    mc: str = ""
    """Multiple-choice JSONL of ``{"context": str, "choices": [str, ...], "answer": int}`` records."""
    batch_size: int = 8
    max_batches: int = 0
    """Per source (shards), text file or SFT set: at most this many batches, of evenly spaced windows
    for shards and text; 0: all."""
    output: str = ""
    """Also write every result to this JSON file."""
    tracking: EvalTrackingConfig = field(default_factory=EvalTrackingConfig)

    def check(self, prefix: str) -> None:
        require(bool(self.checkpoint), f"{prefix}checkpoint", "give a checkpoint (--checkpoint)")
        require(not (self.shards and self.text), f"{prefix}text", "give token shards (--shards) or raw text "
                                                                  "(--text), not both")
        require(bool(self.shards or self.text or self.sft or self.mc), f"{prefix}shards",
                "give something to evaluate on: --shards DIR or --text FILE, and/or --sft FILE, --mc FILE")
        require(not self.text or Path(self.text).suffix in (".txt", ".jsonl"), f"{prefix}text",
                f"{self.text}: expected a .txt or .jsonl file")
        require(self.sft_val_fraction is None or 0.0 < self.sft_val_fraction < 1.0, f"{prefix}sft_val_fraction",
                "must be in (0, 1)")
        require(self.batch_size > 0, f"{prefix}batch_size", "must be > 0")
        require(self.max_batches >= 0, f"{prefix}max_batches", "must be >= 0")


@dataclass
class GenerateJobConfig(Config):
    """``lmpipe generate``: sample completions of prompts from a checkpoint."""

    checkpoint: str = ""
    prompt: Optional[str] = None
    """One prompt ("" starts from EOS, a document boundary); give this or ``prompts``."""
    prompts: str = ""
    """A file of prompts: .txt, one per non-empty line, or .jsonl, each record's ``prompt`` or, with
    ``chat``, its conversation so far (``messages`` as fine-tuning data has them, ending in a user turn)."""
    output: str = ""
    """Write {"prompt", "completion"} records (or {"messages", "completion"}) here as JSONL."""
    max_new_tokens: int = 64
    temperature: float = 0.8
    """0: greedy (top_k and top_p then do nothing)."""
    top_k: int = 50
    """Sample among the k most probable tokens; 0: all."""
    top_p: float = 1.0
    """Then among the smallest set of them whose probabilities sum to >= top_p (nucleus); 1: all."""
    stop: list[str] = field(default_factory=list)
    """A completion ends just before the first of these strings (and at EOS)."""
    seed: int = 0
    batch_size: int = 8
    """Prompts sampled together (left-padded, one KV cache)."""
    chat: bool = False
    """Wrap each prompt as a fine-tuning user turn (<|user|> prompt <|assistant|>) and return only the reply."""
    system: str = ""
    """With ``chat``: a system message before each prompt (a conversation that has its own keeps that)."""

    def check(self, prefix: str) -> None:
        require(bool(self.checkpoint), f"{prefix}checkpoint", "give a checkpoint (--checkpoint)")
        require(self.prompt is not None or bool(self.prompts), f"{prefix}prompt",
                "give a prompt (--prompt) or a prompts file (--prompts)")
        require(self.prompt is None or not self.prompts, f"{prefix}prompt",
                "give a prompt (--prompt) or a prompts file (--prompts), not both")
        require(self.max_new_tokens > 0, f"{prefix}max_new_tokens", "must be > 0")
        require(self.temperature >= 0.0, f"{prefix}temperature", "must be >= 0 (0: greedy)")
        require(self.top_k >= 0, f"{prefix}top_k", "must be >= 0 (0: no top-k)")
        require(0.0 < self.top_p <= 1.0, f"{prefix}top_p", "must be in (0, 1] (1: no nucleus)")
        require(all(self.stop), f"{prefix}stop", "stop strings must not be empty")
        require(self.chat or not self.system, f"{prefix}system", "a system message needs chat mode (--chat)")
        require(self.batch_size > 0, f"{prefix}batch_size", "must be > 0")
