"""Pretraining, and the one training loop that fine-tuning shares.

``train(cfg)`` runs inside every rank that torchrun starts (or in one plain process):
it joins the process group, builds the model on the meta device, hands it to the
parallel strategy, and runs ``run_loop``. ``run_loop`` knows batches, a
``ParallelModel``, a tracker and a checkpoint callback, nothing about where they came
from, so ``finetune.py`` drives it with SFT batches and a pretrained model.

Rank 0 prints one line per log interval, logs to MLflow, and writes
``<output_dir>/config.yaml`` at the start and ``<output_dir>/result.json`` at the end.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from data_prep.tokenizer.manifest import MANIFEST_FILE
from pipeline.config.finetune import FinetuneJobConfig
from pipeline.config.train import LoopConfig, TrainJobConfig
from pipeline.model.args import ModelArgs
from pipeline.model.transformer import IGNORE_INDEX, build_model, doc_starts_indicator
from pipeline.parallel.base import ParallelModel
from pipeline.parallel.dist import (
    DistInfo,
    all_reduce_sum,
    broadcast_object,
    init_distributed,
    shutdown_distributed,
)
from pipeline.parallel.registry import parallelize
from pipeline.train.checkpoint import (
    TOKENIZER_FILE,
    AsyncCheckpointer,
    newest_checkpoint,
    read_meta,
    resolve_checkpoint,
    save_checkpoint,
)
from pipeline.train.data import TokenLoader, ValBatch, ValidationSet, load_manifest, verify_shards
from pipeline.train.mfu import flops_per_token, mfu, peak_flops
from pipeline.train.mixture import sources_from_config, validation_sources
from pipeline.train.preemption import Preempted, PreemptionWatch
from pipeline.train.tracking import (
    Tracker,
    file_sha256,
    git_commit,
    memory_metrics,
    model_size_tag,
    scaling_tags,
)

Batch = tuple[torch.Tensor, ...]
"""(inputs, targets), or with ``data.doc_masking`` (inputs, targets, doc_starts) (``TokenLoader``)."""
RESULT_FILE = "result.json"
ALL_SOURCES = "all"
"""The source of validation batches that carry none (fine-tuning's)."""


@dataclass
class TrainResult:
    """What a training or fine-tuning job reports; rank 0 writes it as ``result.json``."""

    steps: int
    tokens_seen: int
    first_train_loss: float
    last_train_loss: float
    initial_val_loss: float | None
    final_val_loss: float | None
    final_val_ppl: float | None
    n_params: int
    """Non-embedding parameters (N)."""
    n_params_total: int
    world_size: int
    strategy: str
    tokens_per_s: float
    """Training throughput over all ranks, evaluation and checkpointing excluded."""
    seconds: float
    checkpoint: str
    mlflow_run_id: str | None
    data: dict[str, dict] | None = None
    """Pretraining: per source, samples and tokens drawn, its weight, epochs and repeats (the mixture record)."""

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")
        return path


@dataclass
class LoopOutcome:
    steps: int
    tokens_seen: int
    first_train_loss: float
    last_train_loss: float
    initial_val_loss: float | None
    final_val_loss: float | None
    train_seconds: float
    checkpoint: Path
    data: dict[str, dict] | None = None


def train(cfg: TrainJobConfig) -> TrainResult:
    """Pretrain ``cfg.model`` on ``cfg.data`` (one shards directory or a weighted mixture); call it in every rank."""
    started = time.perf_counter()
    dist = init_distributed(cfg.parallel.backend, strategy=cfg.parallel.strategy)
    try:
        specs = sources_from_config(cfg.data)
        directories = list(dict.fromkeys(Path(spec.shards) for spec in specs))
        tokenizer = _shared_tokenizer(directories)
        args = cfg.model.args(vocab_size=cfg.model.vocab_size or tokenizer["vocab_size"])
        if args.vocab_size < tokenizer["vocab_size"]:
            raise ValueError(
                f"model.vocab_size {args.vocab_size} is smaller than the vocabulary of "
                f"{tokenizer['file']} ({tokenizer['vocab_size']})"
            )
        _verify_on_main(directories, vocab_size=args.vocab_size, check_sha=cfg.data.verify_sha256, dist=dist)
        loop = cfg.train
        accum = loop.grad_accum_steps(dist.world_size)
        total_steps = plan_steps(loop, seq_len=args.seq_len)
        loader = TokenLoader(
            sources=specs,
            split=cfg.data.train_split,
            seq_len=args.seq_len,
            batch_size=loop.micro_batch_size,
            rank=dist.rank,
            world_size=dist.world_size,
            seed=loop.seed,
            prefetch=cfg.data.prefetch,
            doc_starts=cfg.data.doc_masking,
        )
        val_set = ValidationSet(
            validation_sources(cfg.data),
            split=cfg.data.val_split,
            seq_len=args.seq_len,
            windows_per_source=cfg.data.val_windows,
        )

        def val_batches() -> Iterable[ValBatch]:
            return val_set.batches(
                batch_size=loop.micro_batch_size, rank=dist.rank, world_size=dist.world_size
            )

        resume_dir = resume_checkpoint(cfg.output_dir, cfg.checkpoint.resume)
        resume = read_meta(resume_dir) if resume_dir is not None else None
        if resume is not None:
            check_resumable(
                resume,
                resume_dir,
                model_args=args,
                strategy=cfg.parallel.strategy,
                total_steps=total_steps,
                tokenizer_file=tokenizer["file"],
            )
        init_dir = resolve_checkpoint(cfg.init_from) if cfg.init_from and resume is None else None
        init_meta = read_meta(init_dir) if init_dir is not None else {}
        if init_dir is not None:
            check_init_from(init_meta, init_dir, model_args=args, tokenizer_file=tokenizer["file"])
        torch.manual_seed(loop.seed)
        parallel = parallelize(
            build_model(args), strategy=cfg.parallel, dist=dist, loop=loop, total_steps=total_steps
        )
        if resume is not None:
            parallel.load(resume_dir)
            loader.load_state_dict(resume["loader"])
            if dist.is_main:
                print(
                    f"train resuming from {resume_dir} (step {resume['step']}, "
                    f"{resume['tokens_seen']:,} tokens seen)",
                    flush=True,
                )
        elif init_dir is not None:  # continued pretraining: the weights only, all else starts fresh
            parallel.load(init_dir, model_only=True)
            if dist.is_main:
                print(f"train starting from the weights of {init_dir} (step {init_meta['step']})", flush=True)
        n_params = parallel.model.num_params()
        if dist.is_main:
            cfg.save(Path(cfg.output_dir) / "config.yaml")
        manifest_shas = ",".join(file_sha256(directory / MANIFEST_FILE) for directory in directories)
        tracker = Tracker.start(
            cfg.tracking,
            output_dir=cfg.output_dir,
            params=cfg.flat(),
            active=dist.is_main,
            tags=run_tags(
                n_params=n_params,
                strategy=cfg.parallel.strategy,
                dist=dist,
                manifest_sha256=manifest_shas,
                **model_size_tag(cfg.model),
                init_from=str(init_dir) if init_dir is not None else None,
                init_mlflow_run_id=init_meta.get("mlflow_run_id"),
            ),
            run_id=resume["mlflow_run_id"] if resume is not None else None,
        )
        tracker.log_artifact(Path(cfg.output_dir) / "config.yaml")
        for i, directory in enumerate(directories):
            tracker.log_artifact(directory / MANIFEST_FILE, f"manifests/{i}-{directory.name}")
        return run_job(
            cfg,
            parallel=parallel,
            loader=loader,
            val_batches=val_batches,
            model_args=args,
            tokenizer_file=tokenizer["file"],
            tracker=tracker,
            dist=dist,
            accum_steps=accum,
            total_steps=total_steps,
            label="train",
            started=started,
            data_report=loader.mixture_report,
            val_sources=list(val_set.windows),
            resume=resume,
        )
    finally:
        shutdown_distributed(dist)


def check_init_from(
    meta: dict[str, Any], step_dir: Path, *, model_args: ModelArgs, tokenizer_file: Path
) -> None:
    """Continued pretraining takes weights of this model's shape (seq_len aside: RoPE has no weights)
    trained with this tokenizer (the same ids must mean the same text); else one line, before the model is built."""
    saved = dataclasses.replace(ModelArgs(**meta["model"]), seq_len=model_args.seq_len)
    _refuse_another_model(
        saved, step_dir, model_args=model_args, tokenizer_file=tokenizer_file, what="init_from"
    )


def _refuse_another_model(
    saved: ModelArgs,
    step_dir: Path,
    *,
    model_args: ModelArgs,
    tokenizer_file: Path,
    what: str,
    advice: str = "",
) -> None:
    """One line naming the differing fields when ``step_dir`` holds another model shape, or naming the
    tokenizer when it was trained with another one; ``what`` says what the directory is to this job."""
    differing = [
        f.name for f in dataclasses.fields(ModelArgs) if getattr(saved, f.name) != getattr(model_args, f.name)
    ]
    if differing:
        diff = ", ".join(
            f"{name} {getattr(saved, name)} vs {getattr(model_args, name)}" for name in differing
        )
        raise ValueError(f"{what} {step_dir} is of another model ({diff}){advice}")
    if file_sha256(step_dir / TOKENIZER_FILE) != file_sha256(tokenizer_file):
        raise ValueError(
            f"{what} {step_dir} was trained with another tokenizer than {tokenizer_file}{advice}"
        )


def resume_checkpoint(output_dir: str | Path, resume: str) -> Path | None:
    """The step directory a job continues from: ``checkpoint.resume`` is ``auto`` (the newest complete
    one in ``output_dir``, or none), ``never`` (none; an output_dir with checkpoints is refused, so
    a fresh run never interleaves its checkpoints with an old one's), or a step directory."""
    if resume == "auto":
        return newest_checkpoint(output_dir)
    if resume == "never":
        found = newest_checkpoint(output_dir)
        if found is not None:
            raise ValueError(
                f"{output_dir} already has checkpoints ({found.name}); use checkpoint.resume=auto "
                "to continue that run, or another output_dir"
            )
        return None
    return resolve_checkpoint(resume)


def check_resumable(
    meta: dict[str, Any],
    step_dir: Path,
    *,
    model_args: ModelArgs,
    strategy: str,
    total_steps: int,
    tokenizer_file: Path,
) -> None:
    """A checkpoint of another model shape or tokenizer (the same ids would mean other text), a step
    past the planned end, or another checkpoint format (DeepSpeed's vs DCP) cannot be continued: one
    line, before the model is built."""
    _refuse_another_model(
        ModelArgs(**meta["model"]),
        step_dir,
        model_args=model_args,
        tokenizer_file=tokenizer_file,
        what="checkpoint",
        advice="; use another output_dir or checkpoint.resume=never",
    )
    if meta["step"] > total_steps:
        raise ValueError(
            f"checkpoint {step_dir} is at step {meta['step']}, past this run's {total_steps} steps"
        )
    if (meta["strategy"].startswith("zero")) != strategy.startswith("zero"):
        raise ValueError(
            f"checkpoint {step_dir} was written by strategy {meta['strategy']}, whose format "
            f"parallel.strategy={strategy} cannot read"
        )


def _shared_tokenizer(directories: list[Path]) -> dict[str, Any]:
    """The tokenizer every shards directory was made with: ``{"file", "vocab_size", "sha256"}``.
    Directories tokenized differently cannot be mixed (the same id would mean different text)."""
    found: dict[str, Any] | None = None
    for directory in directories:
        entry = load_manifest(directory)["tokenizer"]
        tokenizer = {
            "file": directory / entry["path"],
            "vocab_size": entry["vocab_size"],
            "sha256": entry["sha256"],
        }
        if found is not None and tokenizer["sha256"] != found["sha256"]:
            raise ValueError(
                f"{directory / MANIFEST_FILE} was tokenized with another tokenizer than "
                f"{found['file']}; a mixture needs one tokenizer"
            )
        found = found or tokenizer
    assert found is not None, "sources_from_config returns at least one source"
    return found


def _verify_on_main(directories: list[Path], *, vocab_size: int, check_sha: bool, dist: DistInfo) -> None:
    """Rank 0 checks the shards (``data.verify_shards``) before the first step; a problem stops every
    rank with rank 0's one-line message, instead of rank 0 failing while the others wait in a collective."""
    problem = ""
    if dist.is_main:
        try:
            for directory in directories:
                verify_shards(directory, tokenizer_path=None, vocab_size=vocab_size, check_sha=check_sha)
        except (ValueError, FileNotFoundError) as exc:
            problem = str(exc)
    problem = broadcast_object(problem)
    if problem:
        raise ValueError(problem)


def plan_steps(loop: LoopConfig, *, seq_len: int) -> int:
    """Optimizer steps to run: exactly the token budget ``max_tokens`` when one is set (the config
    check made it a whole number of steps), else ``max_steps``."""
    if not loop.max_tokens:
        return loop.max_steps
    return loop.max_tokens // (loop.global_batch_size * seq_len)


def run_tags(*, n_params: int, strategy: str, dist: DistInfo, **extra: str | None) -> dict[str, str | int]:
    tags = {
        "N": n_params,
        "strategy": strategy,
        "world_size": dist.world_size,
        "git_commit": git_commit(),
        **extra,
    }
    return {key: value for key, value in tags.items() if value is not None}


def train_step(parallel: ParallelModel, micro_batches: list[Batch], *, dist: DistInfo) -> tuple[float, float]:
    """One optimizer step over this rank's micro-batches; returns (global mean loss, gradient norm).

    Each micro-batch's summed loss is divided by the target count of the whole global batch
    (all ranks, all micro-batches), so every target token weighs the same however the batch
    is split (SFT batches hold different numbers of response tokens).

    A non-finite loss or gradient norm (the same on every rank: both are global) means the step
    was skipped: gradients dropped, no update (``ParallelModel.skip_step``); ``run_loop`` counts it.
    """
    local_targets = sum(int((batch[1] != IGNORE_INDEX).sum()) for batch in micro_batches)
    global_targets = float(all_reduce_sum([local_targets], device=dist.device)[0])
    if global_targets == 0:
        raise ValueError("a training batch has no target tokens (every label is ignored)")
    scale = dist.world_size / global_targets  # the strategy averages gradients over ranks
    loss_sum = torch.zeros((), dtype=torch.float64, device=dist.device)
    for i, (inputs, targets, *doc_starts) in enumerate(micro_batches):
        inputs, targets = (
            inputs.to(dist.device, non_blocking=True),
            targets.to(dist.device, non_blocking=True),
        )
        starts = (
            doc_starts_indicator(doc_starts[0], tuple(inputs.shape)).to(dist.device, non_blocking=True)
            if doc_starts
            else None
        )  # a third item: mask attention at document boundaries
        with parallel.accumulate(sync=i == len(micro_batches) - 1):
            _, loss = parallel(inputs, targets, reduction="sum", doc_starts=starts)
            parallel.backward(loss * scale)
        loss_sum += loss.detach()
    loss = float(all_reduce_sum([float(loss_sum)], device=dist.device)[0]) / global_targets
    if not math.isfinite(loss):
        parallel.skip_step()
        return loss, math.nan
    return loss, parallel.step()  # step() itself skips a non-finite gradient norm


class TrainingDiverged(ValueError):
    """``train.max_bad_steps`` steps in a row had a non-finite loss or gradient norm (raised on every rank)."""


@torch.no_grad()
def validate(
    parallel: ParallelModel,
    batches: Iterable[ValBatch | Batch],
    *,
    dist: DistInfo,
    sources: Sequence[str] = (ALL_SOURCES,),
) -> tuple[float | None, dict[str, float]]:
    """Mean loss per target token over every rank's batches, overall and per source; (None, {}) when
    there are none. Batches are ``ValBatch``es tagged with one of ``sources``, or plain (inputs,
    targets), which count as ``all``. ``sources`` is the same list on every rank, so the all-reduce
    matches even when a rank has no batch of some source."""
    index = {name: i for i, name in enumerate(sources)}
    sums = [0.0] * (2 * len(sources))
    for batch in batches:
        source, inputs, targets = batch if isinstance(batch, ValBatch) else (ALL_SOURCES, *batch)
        inputs, targets = inputs.to(dist.device), targets.to(dist.device)
        i = index[source]
        sums[2 * i] += float(parallel.eval_loss(inputs, targets))
        sums[2 * i + 1] += int((targets != IGNORE_INDEX).sum())
    totals = all_reduce_sum(sums, device=dist.device).tolist()
    by_source = {name: totals[2 * i] / totals[2 * i + 1] for name, i in index.items() if totals[2 * i + 1]}
    loss_sum, count = sum(totals[0::2]), sum(totals[1::2])
    return (loss_sum / count if count else None), by_source


def run_loop(
    parallel: ParallelModel,
    *,
    loop: LoopConfig,
    batches: Iterator[Batch],
    val_batches: Callable[[], Iterable[Batch]],
    dist: DistInfo,
    accum_steps: int,
    total_steps: int,
    tracker: Tracker,
    save_checkpoint: Callable[[int, int, dict[str, Any]], Path],
    checkpoint_interval: int,
    label: str,
    data_report: Callable[[], dict[str, dict]] | None = None,
    val_sources: Sequence[str] = (ALL_SOURCES,),
    resume: dict[str, Any] | None = None,
    preemption: PreemptionWatch | None = None,
    token_flops: float = 0.0,
    device_peak: float | None = None,
) -> LoopOutcome:
    """Validate, then ``total_steps`` optimizer steps with periodic logs, validation and checkpoints.

    ``data_report()`` (the loader's per-source draw) adds ``data/epochs/<source>`` to each log.
    ``resume`` (a checkpoint's meta) continues after its step, reporting as the uninterrupted run
    would. When ``preemption`` saw a signal, the step in progress finishes, a checkpoint is written
    and ``Preempted`` is raised. A step with a non-finite loss or gradient norm is skipped (its data
    consumed, MLflow ``skipped_steps`` counts them); ``loop.max_bad_steps`` in a row write a checkpoint
    (the last good weights, the loader past the bad data) and raise ``TrainingDiverged``."""
    say = print if dist.is_main else (lambda *_, **__: None)

    def run_validation(step: int) -> float | None:
        loss, by_source = validate(parallel, val_batches(), dist=dist, sources=val_sources)
        if loss is not None:
            metrics = {"val/loss": loss, "val/ppl": math.exp(loss)}
            if len(by_source) > 1:
                for source, source_loss in by_source.items():
                    metrics.update(
                        {f"val/loss/{source}": source_loss, f"val/ppl/{source}": math.exp(source_loss)}
                    )
            tracker.log_metrics(metrics, step=step)
            per_source = (
                "".join(f"  {source} {value:.4f}" for source, value in by_source.items())
                if len(by_source) > 1
                else ""
            )
            say(
                f"{label} step {step:>5}/{total_steps}  val loss {loss:.4f}  ppl {math.exp(loss):,.2f}{per_source}",
                flush=True,
            )
        return loss

    if resume is None:
        start_step, tokens_seen = 0, 0
        initial_val_loss, first_loss = run_validation(0), math.nan
    else:
        start_step, tokens_seen = resume["step"], resume["tokens_seen"]
        initial_val_loss = resume["progress"].get("initial_val_loss")
        first_loss = resume["progress"].get("first_train_loss", math.nan)
    last_loss, train_seconds = math.nan, 0.0
    window_tokens, window_seconds, window_losses = 0, 0.0, []
    bad_in_a_row, skipped_steps = 0, 0

    def checkpoint(step: int) -> Path:
        return save_checkpoint(
            step, tokens_seen, {"initial_val_loss": initial_val_loss, "first_train_loss": first_loss}
        )

    for step in range(start_step + 1, total_steps + 1):
        tick = time.perf_counter()
        lr = parallel.lr
        micro_batches = [next(batches) for _ in range(accum_steps)]
        loss, grad_norm = train_step(parallel, micro_batches, dist=dist)
        step_tokens = sum(batch[0].numel() for batch in micro_batches) * dist.world_size
        elapsed = time.perf_counter() - tick
        tokens_seen += step_tokens
        train_seconds += elapsed
        window_tokens, window_seconds = window_tokens + step_tokens, window_seconds + elapsed
        if math.isfinite(loss) and math.isfinite(grad_norm):
            bad_in_a_row, last_loss = 0, loss
            window_losses.append(loss)
            if math.isnan(first_loss):
                first_loss = loss
        else:
            bad_in_a_row, skipped_steps = bad_in_a_row + 1, skipped_steps + 1
            tracker.log_metrics({"skipped_steps": skipped_steps}, step=step)
            say(
                f"{label} step {step:>5}/{total_steps}  skipped: loss {loss}  grad {grad_norm}  "
                f"({bad_in_a_row}/{loop.max_bad_steps} in a row)",
                flush=True,
            )
            if bad_in_a_row >= loop.max_bad_steps:
                saved = checkpoint(step)
                raise TrainingDiverged(
                    f"{label} diverged: {bad_in_a_row} steps in a row with a non-finite loss or "
                    f"gradient norm, the last at step {step} (loss {loss}, grad norm {grad_norm}); "
                    f"the last good weights are in {saved}"
                )
        if step == 1 or step % loop.log_interval == 0 or step == total_steps:
            loss = sum(window_losses) / len(window_losses) if window_losses else math.nan
            tokens_per_s = window_tokens / window_seconds
            metrics = {
                "train/loss": loss,
                "lr": lr,
                "grad_norm": grad_norm,
                "tokens_seen": tokens_seen,
                "tokens_per_s": tokens_per_s,
                "mfu": mfu(tokens_per_s / dist.world_size, token_flops, device_peak),
            }
            if tracker.system_metrics:
                metrics.update(memory_metrics(dist.device))
            if data_report is not None:
                metrics.update(
                    {f"data/epochs/{source}": entry["epochs"] for source, entry in data_report().items()}
                )
            tracker.log_metrics(metrics, step=step)
            say(
                f"{label} step {step:>5}/{total_steps}  loss {loss:.4f}  lr {lr:.2e}  grad {grad_norm:.3f}  "
                f"tokens {tokens_seen:,}  {tokens_per_s:,.0f} tok/s",
                flush=True,
            )
            window_tokens, window_seconds, window_losses = 0, 0.0, []
        if loop.eval_interval and step % loop.eval_interval == 0 and step != total_steps:
            run_validation(step)
        saved = (
            checkpoint(step)
            if checkpoint_interval and step % checkpoint_interval == 0 and step != total_steps
            else None
        )
        if preemption is not None and step != total_steps and preemption.requested(dist):
            raise Preempted(step, str(saved or checkpoint(step)), preemption.signal_name)
    val_loss = run_validation(total_steps)
    final = checkpoint(total_steps)
    say(f"{label} saved {final}", flush=True)
    data = data_report() if data_report is not None else None
    if data is not None:
        repeated = {source: entry["repeats"] for source, entry in data.items() if entry["repeats"]}
        if repeated:
            say(f"{label} data repeated: " + ", ".join(f"{s} {n}x" for s, n in repeated.items()), flush=True)
    return LoopOutcome(
        steps=total_steps,
        tokens_seen=tokens_seen,
        first_train_loss=first_loss,
        last_train_loss=last_loss,
        initial_val_loss=initial_val_loss,
        final_val_loss=val_loss,
        train_seconds=train_seconds,
        checkpoint=final,
        data=data,
    )


def run_job(
    cfg: TrainJobConfig | FinetuneJobConfig,
    *,
    parallel: ParallelModel,
    loader: Any,
    val_batches: Callable[[], Iterable[Batch]],
    model_args: ModelArgs,
    tokenizer_file: Path,
    tracker: Tracker,
    dist: DistInfo,
    accum_steps: int,
    total_steps: int,
    label: str,
    started: float,
    data_report: Callable[[], dict[str, dict]] | None = None,
    val_sources: Sequence[str] = (ALL_SOURCES,),
    resume: dict[str, Any] | None = None,
) -> TrainResult:
    """What pretraining and fine-tuning share once model and data are ready: loop, checkpoints, result.

    ``loader`` is any loader with ``__iter__`` and ``state_dict()`` (TokenLoader, SFTLoader);
    its state goes into every checkpoint so a resumed run continues on the next sample.
    SIGTERM/SIGUSR2 end the job after a checkpoint, raising ``Preempted`` (the MLflow run stays
    open for the resumed job to continue).
    """

    writer = AsyncCheckpointer() if cfg.checkpoint.async_save else None

    def checkpoint(step: int, tokens_seen: int, progress: dict[str, Any]) -> Path:
        return save_checkpoint(
            cfg.output_dir,
            parallel=parallel,
            dist=dist,
            step=step,
            tokens_seen=tokens_seen,
            config=cfg,
            model_args=model_args,
            tokenizer_file=tokenizer_file,
            loader_state=loader.state_dict(),
            mlflow_run_id=tracker.run_id,
            seed=cfg.train.seed,
            keep=cfg.checkpoint.keep,
            progress=progress,
            writer=writer,
        )

    token_flops = flops_per_token(
        parallel.model.num_params(),
        model_args.n_layers,
        model_args.d_model,
        model_args.seq_len,
        vocab_size=model_args.vocab_size,
    )
    device_peak = peak_flops(dist.device, cfg.train.precision, override=cfg.tracking.peak_flops)
    with tracker.failing_on_error(keep_open=(Preempted,)), PreemptionWatch() as preemption:
        try:
            outcome = run_loop(
                parallel,
                loop=cfg.train,
                batches=iter(loader),
                val_batches=val_batches,
                dist=dist,
                accum_steps=accum_steps,
                total_steps=total_steps,
                tracker=tracker,
                save_checkpoint=checkpoint,
                checkpoint_interval=cfg.checkpoint.interval,
                label=label,
                data_report=data_report,
                val_sources=val_sources,
                resume=resume,
                preemption=preemption,
                token_flops=token_flops,
                device_peak=device_peak,
            )
        finally:
            if writer is not None:
                writer.close()  # the last checkpoint (final, preemption or divergence) is complete before we go
    return finish_job(
        outcome, output_dir=cfg.output_dir, parallel=parallel, dist=dist, tracker=tracker, started=started
    )


def finish_job(
    outcome: LoopOutcome,
    *,
    output_dir: str | Path,
    parallel: ParallelModel,
    dist: DistInfo,
    tracker: Tracker,
    started: float,
) -> TrainResult:
    """Tag D and C, close the MLflow run, and (rank 0) write ``result.json``."""
    n_params = parallel.model.num_params()
    tracker.set_tags(scaling_tags(n_params=n_params, tokens_seen=outcome.tokens_seen))
    result = TrainResult(
        steps=outcome.steps,
        tokens_seen=outcome.tokens_seen,
        first_train_loss=outcome.first_train_loss,
        last_train_loss=outcome.last_train_loss,
        initial_val_loss=outcome.initial_val_loss,
        final_val_loss=outcome.final_val_loss,
        final_val_ppl=None if outcome.final_val_loss is None else math.exp(outcome.final_val_loss),
        n_params=n_params,
        n_params_total=parallel.model.num_params(non_embedding=False),
        world_size=dist.world_size,
        strategy=parallel.strategy,
        tokens_per_s=outcome.tokens_seen / outcome.train_seconds if outcome.train_seconds else 0.0,
        seconds=time.perf_counter() - started,
        checkpoint=str(outcome.checkpoint),
        mlflow_run_id=tracker.run_id,
        data=outcome.data,
    )
    result_path = Path(output_dir) / RESULT_FILE
    if dist.is_main:
        result.save(result_path)
    tracker.finish(artifacts=(result_path,))
    return result
