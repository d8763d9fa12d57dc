"""What pretraining and fine-tuning share around the loop: the step plan, resume checks, checkpoints,
MLflow tags, and running a ``TrainRun`` to its ``result.json``.

``run_job`` is the end of every job once model and data are ready: it composes the hooks
(``hooks.default_hooks``), runs the loop under a ``PreemptionWatch`` (SIGTERM/SIGUSR2 end the job after a
checkpoint, raising ``Preempted``; the MLflow run stays open for the resumed job), waits for the last
checkpoint write, tags D and C, closes the MLflow run and (rank 0) writes ``result.json``.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any, Protocol

import torch

from pipeline.config.finetune import FinetuneJobConfig
from pipeline.config.parallel import STRATEGY_TRAITS
from pipeline.config.train import LoopConfig, TrainJobConfig
from pipeline.core.errors import ResumeError
from pipeline.core.files import TOKENIZER_FILE, file_sha256
from pipeline.model.args import ModelArgs
from pipeline.parallel.base import ParallelModel
from pipeline.parallel.dist import DistInfo
from pipeline.train.checkpoint import (
    AsyncCheckpointer,
    RunCheckpointer,
    newest_checkpoint,
    resolve_checkpoint,
)
from pipeline.train.cuda import enable_tf32
from pipeline.train.hooks import default_hooks
from pipeline.train.loop import TrainResult, TrainRun, run_loop
from pipeline.train.mfu import flops_per_token, peak_flops
from pipeline.train.preemption import Preempted, PreemptionWatch
from pipeline.train.tracking import Tracker, TrackingUnsent, git_commit, scaling_tags

RESULT_FILE = "result.json"
JobConfig = TrainJobConfig | FinetuneJobConfig


class StatefulLoader(Protocol):
    """A loader whose position goes into every checkpoint (``TokenLoader``, ``SFTLoader``)."""

    def state_dict(self) -> dict[str, Any]: ...


def plan_steps(loop: LoopConfig, *, seq_len: int) -> int:
    """Optimizer steps to run: exactly the token budget ``max_tokens`` when one is set (the config
    check made it a whole number of steps), else ``max_steps``."""
    if not loop.max_tokens:
        return loop.max_steps
    return loop.max_tokens // (loop.batch * seq_len)


def run_tags(*, n_params: int, strategy: str, dist: DistInfo, **extra: str | None) -> dict[str, str | int]:
    tags = {
        "N": n_params,
        "strategy": strategy,
        "world_size": dist.world_size,
        "git_commit": git_commit(),
        **extra,
    }
    return {key: value for key, value in tags.items() if value is not None}


def resume_checkpoint(output_dir: str | Path, resume: str) -> Path | None:
    """The step directory a job continues from: ``checkpoint.resume`` is ``auto`` (the newest complete
    and intact one in ``output_dir``, or none; a corrupt newer one is passed over with a warning),
    ``never`` (none; an output_dir with checkpoints is refused, so a fresh run never interleaves its
    checkpoints with an old one's), or a step directory (checked: ``resolve_checkpoint``)."""
    if resume == "auto":
        return newest_checkpoint(output_dir, hashes=True, warn=warn_on_main)
    if resume == "never":
        found = newest_checkpoint(output_dir)
        if found is not None:
            raise ResumeError(
                f"{output_dir} already has checkpoints ({found.name}); use checkpoint.resume=auto "
                "to continue that run, or another output_dir"
            )
        return None
    return resolve_checkpoint(resume)


def warn_on_main(message: str) -> None:
    """One ``lmpipe: warning:`` line on stderr, from rank 0 only (every rank finds the same problem)."""
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        print(f"lmpipe: warning: {message}", file=sys.stderr, flush=True)


def refuse_another_model(
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
        raise ResumeError(f"{what} {step_dir} is of another model ({diff}){advice}")
    if file_sha256(step_dir / TOKENIZER_FILE) != file_sha256(tokenizer_file):
        raise ResumeError(
            f"{what} {step_dir} was trained with another tokenizer than {tokenizer_file}{advice}"
        )


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
    refuse_another_model(
        ModelArgs(**meta["model"]),
        step_dir,
        model_args=model_args,
        tokenizer_file=tokenizer_file,
        what="checkpoint",
        advice="; use another output_dir or checkpoint.resume=never",
    )
    if meta["step"] > total_steps:
        raise ResumeError(
            f"checkpoint {step_dir} is at step {meta['step']}, past this run's {total_steps} steps"
        )
    saved, wanted = STRATEGY_TRAITS.get(meta["strategy"]), STRATEGY_TRAITS.get(strategy)
    if saved is None or wanted is None or saved.checkpoint_format != wanted.checkpoint_format:
        raise ResumeError(
            f"checkpoint {step_dir} was written by strategy {meta['strategy']}, whose format "
            f"parallel.strategy={strategy} cannot read"
        )


def job_checkpointer(
    cfg: JobConfig,
    parallel: ParallelModel,
    *,
    dist: DistInfo,
    tokenizer_file: Path,
    loader: StatefulLoader,
    tracker: Tracker,
) -> RunCheckpointer:
    """The job's checkpoints: its config, model shape and tokenizer, the loader's position and the MLflow
    run id in every step's meta; written in the background with ``checkpoint.async_save``."""
    return RunCheckpointer(
        Path(cfg.output_dir),
        parallel=parallel,
        dist=dist,
        config=cfg,
        model_args=parallel.model.args,
        tokenizer_file=tokenizer_file,
        seed=cfg.train.seed,
        keep=cfg.checkpoint.keep,
        checksum_max_bytes=cfg.checkpoint.checksum_max_mb << 20,
        keep_best=cfg.checkpoint.keep_best,
        loader_state=loader.state_dict,
        mlflow_run_id=lambda: tracker.run_id,
        writer=AsyncCheckpointer() if cfg.checkpoint.async_save else None,
    )


def run_job(cfg: JobConfig, run: TrainRun, *, resume: dict[str, Any] | None = None) -> TrainResult:
    """Run ``run`` with the job's hooks, then finish it (module docstring)."""
    enable_tf32(run.dist.device)  # before peak_flops, which then counts against the TF32 peak in fp32
    args = run.parallel.model.args
    token_flops = flops_per_token(
        run.parallel.n_params, args.n_layers, args.d_model, args.seq_len, vocab_size=args.vocab_size
    )
    device_peak = peak_flops(run.dist.device, cfg.train.precision, override=cfg.tracking.peak_flops)
    with run.tracker.failing_on_error(keep_open=(Preempted,)), PreemptionWatch() as preemption:
        hooks = default_hooks(
            run,
            checkpoint_interval=cfg.checkpoint.interval,
            preemption=preemption,
            token_flops=token_flops,
            device_peak=device_peak,
        )
        try:
            result = run_loop(run, hooks, resume=resume)
        finally:
            run.checkpointer.close()  # the last checkpoint (final, preemption or divergence) is complete
    return finish_job(result, run, output_dir=cfg.output_dir)


def finish_job(result: TrainResult, run: TrainRun, *, output_dir: str | Path) -> TrainResult:
    """Tag D and C, close the MLflow run, and (rank 0) write ``result.json``."""
    result = dataclasses.replace(result, seconds=time.perf_counter() - run.started)
    run.tracker.set_tags(scaling_tags(n_params=result.n_params, tokens_seen=result.tokens_seen))
    result_path = Path(output_dir) / RESULT_FILE
    if run.dist.is_main:
        result.save(result_path)
    try:
        run.tracker.finish(artifacts=(result_path,))
    except TrackingUnsent as exc:  # the training is done and saved; the store being down does not undo it
        warn_on_main(str(exc))
    return result
