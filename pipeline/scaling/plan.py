"""A scaling-law sweep as data: ``SweepConfig`` (configs/sweep/*.yaml) resolved into one full
``TrainJobConfig`` per run, each loadable by ``lmpipe train --config``.

Runs are model sizes x data sizes (x optional learning-rate multipliers). Data sizes are a grid
(``tokens`` or ``tokens_per_param``) or IsoFLOP budgets (``compute``: D = C / 6N for each size,
sizes whose D falls outside ``min_tokens``..``max_tokens`` left out). Learning rate and global
batch follow the ladder's rules for each N (``ladder.default_lr`` / ``default_batch_size``);
warmup is about N tokens (as the OLMo ladder), capped at a fraction of the run; the cosine
schedule ends at each run's own D. D is rounded to whole optimizer steps, so the C a run is
tagged with is its planned one.

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

from data_prep.tokenizer.manifest import MANIFEST_FILE, load_manifest
from pipeline.config.model import ModelConfig
from pipeline.config.train import TrainJobConfig
from pipeline.core.config import Config, require
from pipeline.core.files import atomic_write_json
from pipeline.model.args import ModelArgs
from pipeline.model.ladder import SIZES, default_batch_size, default_lr

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
        for key in ("tokens", "tokens_per_param", "compute", "lr_multipliers"):
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


@dataclass
class Plan:
    runs: list[PlannedRun]
    configs: dict[str, TrainJobConfig]
    """Run name -> its resolved config."""
    skipped: list[str]
    """Why each (model, budget) pair left out was left out."""


def plan_sweep(cfg: SweepConfig, *, parent_run_id: str = "") -> Plan:
    """Every run of the sweep, resolved and validated (nothing is written)."""
    base = TrainJobConfig.load(cfg.base or None, cfg.overrides)
    manifest = _shards_manifest(base.data.shards)  # None: the plan cannot count epochs yet
    plan = Plan(runs=[], configs={}, skipped=[])
    for model in cfg.models:
        _plan_model(
            cfg,
            model,
            plan,
            seq_len=base.model.seq_len,
            vocab_size=base.model.vocab_size or (manifest["tokenizer"]["vocab_size"] if manifest else 0),
            micro_batch_size=base.train.micro_batch_size,
            train_tokens=_unique_tokens(base, manifest),
            parent_run_id=parent_run_id,
        )
    require(bool(plan.runs), "compute", "no run is left: every model's D is outside min_tokens..max_tokens")
    return plan


def _plan_model(
    cfg: SweepConfig,
    model: ModelSpec,
    plan: Plan,
    *,
    seq_len: int,
    vocab_size: int,
    micro_batch_size: int,
    train_tokens: int,
    parent_run_id: str,
) -> None:
    """Add ``model``'s runs (one per data size and lr multiplier) to ``plan``, or why a size is left out."""
    shape = model.args(seq_len=seq_len, vocab_size=vocab_size)
    n_params = shape.non_embedding_params()
    batch = _global_batch(cfg, model.name, n_params, seq_len)
    step_tokens = batch * seq_len
    micro = math.gcd(micro_batch_size, batch // cfg.nproc_per_node)
    for point, tokens in _data_sizes_within_bounds(cfg, model.name, n_params, plan.skipped):
        steps = max(1, round(tokens / step_tokens))
        tokens = steps * step_tokens
        warmup = min(
            round(cfg.warmup_tokens_per_param * n_params / step_tokens),
            math.floor(cfg.max_warmup_fraction * steps),
        )
        for multiplier in model.lr_multipliers or cfg.lr_multipliers:
            lr = (cfg.lr or default_lr(n_params)) * multiplier
            name = _run_name(model.name, point, multiplier, cfg)
            require(name not in plan.configs, "models", f"two runs are both named {name}")
            out = cfg.root_dir / "runs" / name
            run_overrides = [
                f"output_dir={out}",
                f"train.max_tokens={tokens}",
                f"train.global_batch_size={batch}",
            ]
            run_overrides += [
                f"train.micro_batch_size={micro}",
                f"train.lr={lr!r}",
                f"train.warmup_steps={warmup}",
            ]
            plan.configs[name] = _run_config(cfg, model, name, run_overrides, parent_run_id=parent_run_id)
            plan.runs.append(
                PlannedRun(
                    name=name,
                    model=model.name,
                    N=n_params,
                    D=tokens,
                    C=6 * n_params * tokens,
                    budget=point if cfg.compute else 0.0,
                    lr=lr,
                    global_batch_size=batch,
                    seq_len=seq_len,
                    steps=steps,
                    warmup_steps=warmup,
                    est_seconds=_estimate_seconds(cfg, model.name, shape, tokens=tokens),
                    config=str(out / "config.yaml"),
                    epochs=tokens / train_tokens if train_tokens else 0.0,
                )
            )


def _unique_tokens(base: TrainJobConfig, manifest: dict | None) -> int:
    """The distinct training tokens each run draws from: the split's, or fewer with ``data.unique_tokens``
    (a data-constrained sweep); 0 while the shards are not made yet."""
    if not manifest:
        return 0
    split = manifest["totals"]["by_split"]["train"]["tokens"]
    return min(split, base.data.unique_tokens) if base.data.unique_tokens else split


def _global_batch(cfg: SweepConfig, model: str, n_params: int, seq_len: int) -> int:
    """Sequences per step: the sweep's, else the ladder's rule for N; it must split over the ranks."""
    batch = cfg.global_batch_size or default_batch_size(n_params, seq_len)
    require(
        batch % cfg.nproc_per_node == 0,
        "nproc_per_node",
        f"model {model}: global batch {batch} does not split over {cfg.nproc_per_node} ranks",
    )
    return batch


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


def si(value: float) -> str:
    """A count in SI units to three digits (``65.5k``): run names and tables stay short."""
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.3g}"


def _data_sizes(cfg: SweepConfig, n_params: int) -> list[tuple[float, float]]:
    """(the sweep's data point: C, tokens per param or tokens; the tokens it means for this model)."""
    if cfg.compute:
        return [(budget, budget / (6 * n_params)) for budget in cfg.compute]
    if cfg.tokens_per_param:
        return [(ratio, ratio * n_params) for ratio in cfg.tokens_per_param]
    return [(float(tokens), float(tokens)) for tokens in cfg.tokens]


def _data_sizes_within_bounds(
    cfg: SweepConfig, model: str, n_params: int, skipped: list[str]
) -> list[tuple[float, float]]:
    """``_data_sizes`` without the IsoFLOP points whose D is outside the bounds; why each was left out
    goes to ``skipped``."""
    kept = []
    for point, tokens in _data_sizes(cfg, n_params):
        if cfg.compute and not _within(tokens, cfg.min_tokens, cfg.max_tokens):
            skipped.append(
                f"{model} at C={point:.3g}: D={tokens:.3g} is outside "
                f"[{cfg.min_tokens:.3g}, {cfg.max_tokens or math.inf:.3g}]"
            )
        else:
            kept.append((point, tokens))
    return kept


def _within(tokens: float, lower: int, upper: int) -> bool:
    return tokens >= lower and (not upper or tokens <= upper)


def _run_name(model: str, point: float, multiplier: float, cfg: SweepConfig) -> str:
    """``<model>-<data point>[-lr<m>x]``, the data point as the sweep gives it (not D after rounding), so
    that every model's runs at one point share the suffix: ``c1e+15``, ``d65.5k`` or ``x20`` (tokens per
    param)."""
    data = f"c{point:.3g}" if cfg.compute else f"x{point:g}" if cfg.tokens_per_param else f"d{si(point)}"
    several = [cfg.lr_multipliers, *(m.lr_multipliers for m in cfg.models if m.lr_multipliers)]
    lr = f"-lr{multiplier:g}x" if any(len(multipliers) > 1 for multipliers in several) else ""
    return f"{model}-{data}{lr}"


def _estimate_seconds(cfg: SweepConfig, name: str, shape: ModelArgs, *, tokens: int) -> float:
    """Training time only (no validation or start-up): measured tokens/s if given, else FLOPs /
    flops_per_s."""
    if name in cfg.tokens_per_s:
        return tokens / cfg.tokens_per_s[name]
    return tokens * shape.flops_per_token() / cfg.flops_per_s


def _shards_manifest(shards: str) -> dict | None:
    """The manifest of the runs' shards, checked (``load_manifest``); None while they are not made yet."""
    if not (shards and (Path(shards) / MANIFEST_FILE).is_file()):
        return None
    return load_manifest(shards)
