"""A scaling-law sweep as data: ``SweepConfig`` (configs/sweep/*.yaml) resolved into one full
``TrainJobConfig`` per run, each loadable by ``lmpipe train --config``.

Runs are model sizes x data sizes (x optional batch sizes x learning-rate multipliers: each data
point's loss is then the best of its runs, pipeline/scaling/results.py). Data sizes are a grid
(``tokens`` or ``tokens_per_param``) or IsoFLOP budgets (``compute``: D = C / 6N for each size,
sizes whose D falls outside ``min_tokens``..``max_tokens`` left out; pipeline/scaling/grid.py).
Learning rate and global batch follow the ladder's rules for each N (``ladder.default_lr`` /
``default_batch_size``) unless given; warmup is about N tokens (as the OLMo ladder), capped at a
fraction of the run; the cosine schedule ends at each run's own D. D is rounded to whole optimizer
steps of the run's batch, so the C a run is tagged with is its planned one.

Torch-free: ``lmpipe sweep plan`` validates and prints in a fraction of a second.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from pipeline.config.model import ModelConfig
from pipeline.config.train import TrainJobConfig
from pipeline.core.config import Config, require
from pipeline.core.files import atomic_write_json
from pipeline.model.args import ModelArgs
from pipeline.model.ladder import SIZES, default_batch_size, default_lr
from pipeline.scaling.grid import data_points, point_label, run_name, shards_manifest, unique_train_tokens

SWEEP_STATE = "sweep.json"
"""<root>/sweep.json: the parent MLflow run of the sweep, written when it is first created."""
SHAPE_KEYS = ("d_model", "n_layers", "n_heads", "n_kv_heads")


@dataclass
class ModelSpec(Config):
    """One model size of the sweep: a ladder rung by name, or a named custom shape."""

    name: str = ""
    """A ladder size (``14m``) alone, or any name with the shape below."""
    d_model: Optional[int] = None
    n_layers: Optional[int] = None
    n_heads: Optional[int] = None
    n_kv_heads: Optional[int] = None
    """None: ``n_heads`` (no grouped-query attention)."""
    lr_multipliers: Optional[list[float]] = None
    """This size's learning-rate multipliers instead of the sweep's: the larger the model, the lower its
    best learning rate, so a size can leave out multipliers a pilot showed it never wins at."""
    global_batch_sizes: Optional[list[int]] = None
    """This size's batch sizes (sequences per step) instead of the sweep's: the best batch grows with N."""

    def check(self, prefix: str) -> None:
        require(
            bool(self.name),
            f"{prefix}name",
            "give each model a name (a ladder size, or any name with a shape)",
        )
        custom = [key for key in SHAPE_KEYS[:3] if getattr(self, key) is not None]
        if not custom:
            require(
                self.name in SIZES,
                f"{prefix}name",
                f"{self.name!r} is not a ladder size "
                f"({', '.join(SIZES)}); give a custom shape: d_model, n_layers, n_heads",
            )
        else:
            require(
                len(custom) == 3, f"{prefix}d_model", "a custom shape needs d_model, n_layers and n_heads"
            )
        if self.lr_multipliers is not None:
            require(
                bool(self.lr_multipliers) and all(m > 0 for m in self.lr_multipliers),
                f"{prefix}lr_multipliers",
                "give at least one, each > 0 (or leave it out: the sweep's)",
            )
        if self.global_batch_sizes is not None:
            require(
                bool(self.global_batch_sizes) and all(b > 0 for b in self.global_batch_sizes),
                f"{prefix}global_batch_sizes",
                "give at least one, each > 0 (or leave it out: the sweep's)",
            )

    def args(self, *, seq_len: int, vocab_size: int) -> ModelArgs:
        """The shape ``overrides`` trains, resolved as the run's ``model`` section resolves it."""
        if self.d_model is None:
            section = ModelConfig(size=self.name, seq_len=seq_len)
        else:
            section = ModelConfig(
                d_model=self.d_model,
                n_layers=self.n_layers,
                n_heads=self.n_heads,
                n_kv_heads=self.n_kv_heads or self.n_heads,
                seq_len=seq_len,
            )
        return section.args(vocab_size=vocab_size)

    def overrides(self) -> list[str]:
        """The ``model.*`` overrides that train this shape (a custom shape overrides every field of a
        rung)."""
        if self.d_model is None:
            return [f"model.size={self.name}"]
        return [
            "model.size=tiny",
            f"model.d_model={self.d_model}",
            f"model.n_layers={self.n_layers}",
            f"model.n_heads={self.n_heads}",
            f"model.n_kv_heads={self.n_kv_heads or self.n_heads}",
        ]


@dataclass
class SweepConfig(Config):
    """``lmpipe sweep plan|run|plot``: the runs of one scaling-law sweep and where they go."""

    name: str = "sweep"
    """Names the MLflow parent run, and the experiment unless ``experiment`` is given."""
    base: str = ""
    """A train config (configs/train/*.yaml) every run starts from; empty: the built-in defaults."""
    overrides: list[str] = field(default_factory=list)
    """Dotted overrides onto ``base`` for every run, e.g.
    ``[data.shards=demo_out/shards, model.seq_len=256]``."""
    models: list[ModelSpec] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    """Grid: every model trains on each of these token counts."""
    tokens_per_param: list[float] = field(default_factory=list)
    """Grid: every model trains on each of these multiples of its N (20: Chinchilla)."""
    compute: list[float] = field(default_factory=list)
    """IsoFLOP: every model trains on D = C / 6N tokens for each of these budgets C (FLOP)."""
    min_tokens: int = 0
    """IsoFLOP: sizes whose D falls below this are left out of a budget (0: no bound)."""
    max_tokens: int = 0
    """IsoFLOP: sizes whose D exceeds this are left out of a budget (0: no bound)."""
    lr: Optional[float] = None
    """Peak learning rate of every run; None: the ladder's rule for each N."""
    global_batch_size: Optional[int] = None
    """Sequences per step of every run; None: the ladder's rule for each N."""
    global_batch_sizes: list[int] = field(default_factory=list)
    """A batch-size sweep instead, e.g. [2, 8]: one run per batch size (x lr multiplier) at each model and
    data size, steps and warmup following each run's batch; empty: ``global_batch_size``."""
    lr_multipliers: list[float] = field(default_factory=lambda: [1.0])
    """A small learning-rate sweep per run, e.g. [0.5, 1, 2] (three runs per model and data size)."""
    warmup_tokens_per_param: float = 1.0
    """Warmup of about N tokens (OLMo ladder) ..."""
    max_warmup_fraction: float = 0.1
    """... capped at this share of the run's steps."""
    nproc_per_node: int = 1
    """Ranks each run trains on (DDP under torchrun when > 1); the micro batch is chosen to split over
    them."""
    experiment: str = ""
    """MLflow experiment of the parent and its runs; empty: ``name``."""
    tracking_uri: str = ""
    """Empty: $MLFLOW_TRACKING_URI, else sqlite:///<root>/mlflow.db."""
    root: str = ""
    """Where the sweep writes (runs/<run>/, plan.json, plan.csv, sweep.json, plots/); empty:
    runs/sweeps/<name>."""
    tokens_per_s: dict[str, float] = field(default_factory=dict)
    """Measured training throughput per model name, for the plan's time estimate."""
    flops_per_s: float = 2e10
    """For models without a measured ``tokens_per_s``: a guess of the effective training FLOP/s of one run."""

    def check(self, prefix: str) -> None:
        require(
            bool(self.models), f"{prefix}models", "give at least one model (a ladder size or a custom shape)"
        )
        for index, model in enumerate(
            self.models
        ):  # Config.validate walks nested configs and dicts, not lists
            model.validate(f"{prefix}models.{index}.")
        names = [model.name for model in self.models]
        require(len(set(names)) == len(names), f"{prefix}models", f"names must be unique, got {names}")
        given = [key for key in ("tokens", "tokens_per_param", "compute") if getattr(self, key)]
        require(
            len(given) == 1,
            f"{prefix}tokens",
            "give the data sizes one way: tokens, tokens_per_param "
            f"(a grid) or compute (IsoFLOP budgets); got {', '.join(given) or 'none'}",
        )
        for key in ("tokens", "tokens_per_param", "compute", "lr_multipliers", "global_batch_sizes"):
            require(
                all(value > 0 for value in getattr(self, key)), f"{prefix}{key}", "every value must be > 0"
            )
        require(
            bool(self.lr_multipliers), f"{prefix}lr_multipliers", "give at least one ([1.0]: the rule's lr)"
        )
        require(self.min_tokens >= 0 and self.max_tokens >= 0, f"{prefix}min_tokens", "bounds must be >= 0")
        require(
            not self.max_tokens or self.max_tokens >= self.min_tokens,
            f"{prefix}max_tokens",
            f"{self.max_tokens} is below min_tokens={self.min_tokens}",
        )
        require(self.lr is None or self.lr > 0, f"{prefix}lr", "must be > 0 (or unset: the ladder's rule)")
        require(
            self.global_batch_size is None or self.global_batch_size > 0,
            f"{prefix}global_batch_size",
            "must be > 0 (or unset: the ladder's rule)",
        )
        require(
            self.global_batch_size is None or not self.global_batch_sizes,
            f"{prefix}global_batch_sizes",
            "give global_batch_size (one for every run) or global_batch_sizes (a sweep), not both",
        )
        require(self.warmup_tokens_per_param >= 0, f"{prefix}warmup_tokens_per_param", "must be >= 0")
        require(0 <= self.max_warmup_fraction <= 1, f"{prefix}max_warmup_fraction", "must be in [0, 1]")
        require(self.nproc_per_node >= 1, f"{prefix}nproc_per_node", "must be >= 1")
        require(self.flops_per_s > 0, f"{prefix}flops_per_s", "must be > 0")
        unknown = sorted(set(self.tokens_per_s) - set(names))
        require(not unknown, f"{prefix}tokens_per_s", f"{', '.join(unknown)} is not a model of the sweep")

    @property
    def root_dir(self) -> Path:
        return Path(self.root or f"runs/sweeps/{self.name}")

    @property
    def experiment_name(self) -> str:
        return self.experiment or self.name

    def resolve_uri(self) -> str:
        return (
            self.tracking_uri
            or os.environ.get("MLFLOW_TRACKING_URI")
            or f"sqlite:///{self.root_dir.resolve()}/mlflow.db"
        )


@dataclass(frozen=True)
class PlannedRun:
    """One row of the plan: what ``plan.csv`` holds and the table prints."""

    name: str
    model: str
    N: int
    D: int
    C: int
    budget: float
    """The IsoFLOP budget this run belongs to (0 for a grid)."""
    lr: float
    global_batch_size: int
    seq_len: int
    steps: int
    warmup_steps: int
    est_seconds: float
    config: str
    """Path of the run's config.yaml."""
    epochs: float = 0.0
    """Passes over the training split that D takes (D / its tokens; 0 when the shards are not there yet).
    Above 1 the run repeats data: a data-constrained point, flagged in the table."""
    point: str = ""
    """The data point as the sweep gives it (``d65.5k``, ``x20``, ``c1e+15``): a point's runs share it
    whatever their batch and lr, while D, rounded to whole steps of each run's batch, may differ."""


@dataclass
class Plan:
    runs: list[PlannedRun]
    configs: dict[str, TrainJobConfig]
    """Run name -> its resolved config."""
    skipped: list[str]
    """Why each (model, budget) pair left out was left out."""


@dataclass(frozen=True)
class _Shared:
    """What every run of the sweep takes from its base train config (and the parent MLflow run)."""

    seq_len: int
    vocab_size: int
    micro_batch_size: int
    train_tokens: int
    """The distinct training tokens a run draws from (0: not known yet), for its epochs."""
    parent_run_id: str
    several_batches: bool
    several_lrs: bool
    """Whether run names carry the batch and the lr multiplier (``_varied_axes``)."""


def plan_sweep(cfg: SweepConfig, *, parent_run_id: str = "") -> Plan:
    """Every run of the sweep, resolved and validated (nothing is written)."""
    base = TrainJobConfig.load(cfg.base or None, cfg.overrides)
    manifest = shards_manifest(base.data.shards)  # None: the plan cannot count epochs yet
    several_batches, several_lrs = _varied_axes(cfg)
    shared = _Shared(
        seq_len=base.model.seq_len,
        vocab_size=base.model.vocab_size or (manifest["tokenizer"]["vocab_size"] if manifest else 0),
        micro_batch_size=base.train.micro_batch_size,
        train_tokens=unique_train_tokens(base, manifest),
        parent_run_id=parent_run_id,
        several_batches=several_batches,
        several_lrs=several_lrs,
    )
    plan = Plan(runs=[], configs={}, skipped=[])
    for model in cfg.models:
        _plan_model(cfg, model, plan, shared)
    require(bool(plan.runs), "compute", "no run is left: every model's D is outside min_tokens..max_tokens")
    return plan


def _plan_model(cfg: SweepConfig, model: ModelSpec, plan: Plan, shared: _Shared) -> None:
    """Add ``model``'s runs (one per data size, batch size and lr multiplier) to ``plan``, or why a size is
    left out."""
    shape = model.args(seq_len=shared.seq_len, vocab_size=shared.vocab_size)
    n_params = shape.non_embedding_params()
    batches = _global_batches(cfg, model, n_params, shared.seq_len)
    for point, tokens in data_points(cfg, model.name, n_params, plan.skipped):
        for batch in batches:
            for multiplier in model.lr_multipliers or cfg.lr_multipliers:
                _plan_run(cfg, model, shape, plan, shared, point, tokens, batch, multiplier)


def _plan_run(
    cfg: SweepConfig,
    model: ModelSpec,
    shape: ModelArgs,
    plan: Plan,
    shared: _Shared,
    point: float,
    tokens: float,
    batch: int,
    multiplier: float,
) -> None:
    """Add one run to ``plan``: D rounded to whole steps of ``batch``, warmup ~N tokens in those steps,
    and ``multiplier`` times the sweep's (or the ladder's) learning rate."""
    n_params = shape.non_embedding_params()
    step_tokens = batch * shared.seq_len
    steps = max(1, round(tokens / step_tokens))
    d = steps * step_tokens
    warmup = min(
        round(cfg.warmup_tokens_per_param * n_params / step_tokens),
        math.floor(cfg.max_warmup_fraction * steps),
    )
    label = point_label(cfg, point)
    name = run_name(
        model.name,
        label,
        batch=batch if shared.several_batches else None,
        multiplier=multiplier if shared.several_lrs else None,
    )
    require(name not in plan.configs, "models", f"two runs are both named {name}")
    out = cfg.root_dir / "runs" / name
    lr = (cfg.lr or default_lr(n_params)) * multiplier
    run_overrides = [
        f"output_dir={out}",
        f"train.max_tokens={d}",
        f"train.global_batch_size={batch}",
        f"train.micro_batch_size={math.gcd(shared.micro_batch_size, batch // cfg.nproc_per_node)}",
        f"train.lr={lr!r}",
        f"train.warmup_steps={warmup}",
    ]
    plan.configs[name] = _run_config(cfg, model, name, run_overrides, parent_run_id=shared.parent_run_id)
    plan.runs.append(
        PlannedRun(
            name=name,
            model=model.name,
            N=n_params,
            D=d,
            C=6 * n_params * d,
            budget=point if cfg.compute else 0.0,
            lr=lr,
            global_batch_size=batch,
            seq_len=shared.seq_len,
            steps=steps,
            warmup_steps=warmup,
            est_seconds=_estimate_seconds(cfg, model.name, shape, tokens=d),
            config=str(out / "config.yaml"),
            epochs=d / shared.train_tokens if shared.train_tokens else 0.0,
            point=label,
        )
    )


def _global_batches(cfg: SweepConfig, model: ModelSpec, n_params: int, seq_len: int) -> list[int]:
    """Sequences per step, one run each: the model's list, else the sweep's list, else its one batch, else
    the ladder's rule for N; each must split over the ranks."""
    batches = (
        model.global_batch_sizes
        or cfg.global_batch_sizes
        or [cfg.global_batch_size or default_batch_size(n_params, seq_len)]
    )
    for batch in batches:
        require(
            batch % cfg.nproc_per_node == 0,
            "nproc_per_node",
            f"model {model.name}: global batch {batch} does not split over {cfg.nproc_per_node} ranks",
        )
    return batches


def _varied_axes(cfg: SweepConfig) -> tuple[bool, bool]:
    """Whether run names carry the batch, the lr multiplier: only where some list of the sweep (its own or a
    model's) has more than one value, so a sweep without that axis keeps its run names."""
    batches = [cfg.global_batch_sizes, *(m.global_batch_sizes for m in cfg.models if m.global_batch_sizes)]
    lrs = [cfg.lr_multipliers, *(m.lr_multipliers for m in cfg.models if m.lr_multipliers)]
    return any(len(values) > 1 for values in batches), any(len(values) > 1 for values in lrs)


def _run_config(
    cfg: SweepConfig, model: ModelSpec, name: str, run_overrides: list[str], *, parent_run_id: str
) -> TrainJobConfig:
    """One run's full config: the sweep's base and overrides, the model's shape, then the run's own."""
    return TrainJobConfig.load(
        cfg.base or None,
        [
            *cfg.overrides,
            *model.overrides(),
            *run_overrides,
            "train.schedule=cosine",
            "checkpoint.resume=auto",
            f"tracking.experiment={cfg.experiment_name}",
            f"tracking.uri={cfg.resolve_uri()}",
            f"tracking.run_name={name}",
            *([f"tracking.parent_run_id={parent_run_id}"] if parent_run_id else []),
        ],
    )


def write_plan(plan: Plan, root: Path) -> None:
    """Each run's config.yaml, and the plan as plan.json and plan.csv under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for run in plan.runs:
        plan.configs[run.name].save(run.config)
    rows = [asdict(run) for run in plan.runs]
    atomic_write_json(root / "plan.json", {"runs": rows, "skipped": plan.skipped})
    with (root / "plan.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def read_parent_run_id(root: Path) -> str:
    path = root / SWEEP_STATE
    return json.loads(path.read_text())["parent_run_id"] if path.is_file() else ""


def _estimate_seconds(cfg: SweepConfig, name: str, shape: ModelArgs, *, tokens: int) -> float:
    """Training time only (no validation or start-up): measured tokens/s if given, else FLOPs /
    flops_per_s."""
    if name in cfg.tokens_per_s:
        return tokens / cfg.tokens_per_s[name]
    return tokens * shape.flops_per_token() / cfg.flops_per_s
