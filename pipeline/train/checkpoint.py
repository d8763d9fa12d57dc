"""Training checkpoints: ``<output_dir>/checkpoints/step_N/`` and a ``latest`` pointer.

A step directory holds the strategy's state files (ddp/fsdp: DCP, ``.metadata`` + one
``.distcp`` per rank, with model, optimizer and schedule; zero1-3: DeepSpeed's ``zero/``
beside a DCP copy of the weights), ``meta.json`` (step, tokens seen, model shape, loader
state, MLflow run id, RNG summary), the job's ``config.yaml`` and a copy of
``tokenizer.json``, so the directory alone is enough to evaluate, sample or fine-tune.
The strategy's files are its ``ParallelModel.checkpointer``'s (``parallel.checkpointer``); the
step directory around them is ``RunCheckpointer``'s, the same for every strategy. Every part
resumes on any world size: DCP reshards, ZeRO state is converted to DeepSpeed's universal
checkpoint (``parallel.zero_checkpoint``), and the loader state is global.

Writes survive a SIGKILL at any moment (tests/faults): everything goes into ``step_N.tmp/``;
``checksums.json`` (every file's size and, up to ``checksum_max_bytes``, its blake2b) is written
into it last, then it is renamed to ``step_N/`` and ``checkpoints/latest`` (a text file naming the
step directory) is replaced. Only then are older steps pruned to the newest ``keep`` (each renamed
to a hidden name before it is deleted, so a half-deleted one is never mistaken for a checkpoint).
A kill leaves the previous complete step in place, and a step directory that is there is complete.

Files can still go bad afterwards (a full disk, a truncating copy, a bad block): every reader checks
a step against its ``checksums.json`` (``verify_checkpoint``; sizes always, hashes of the files that
have one). ``resolve_checkpoint`` (eval, export, consolidate, init_from) refuses a corrupt step naming
the file; ``newest_checkpoint`` (resume) passes over it to the previous good one with a warning.

With ``checkpoint.async_save`` (ddp, fsdp) a save costs training only the copy of the
state to host memory: a background thread writes the files and then completes the step
directory (meta, rename, ``latest``) as above, so a run killed mid-write resumes from the
previous checkpoint. One write is in flight at a time; the job waits for it before the
next save and before it ends (``AsyncCheckpointer``).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import warnings
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer
from torch.distributed import ProcessGroup

from pipeline.core.config import Config
from pipeline.core.errors import ConfigError, InputError, MissingInputError
from pipeline.core.files import (
    CONFIG_FILE,
    LATEST_FILE,
    META_FILE,
    TOKENIZER_FILE,
    atomic_write_json,
    atomic_write_text,
)
from pipeline.model.args import ModelArgs
from pipeline.model.lora import META_KEY, adapter_config
from pipeline.model.transformer import Transformer, build_model
from pipeline.parallel.base import ParallelModel
from pipeline.parallel.checkpointer import AsyncSaveCheckpointer
from pipeline.parallel.dcp import load_model_weights
from pipeline.parallel.dist import DistInfo, all_reduce_sum, barrier, broadcast_object
from pipeline.train.step_files import (
    DEFAULT_CHECKSUM_MAX_BYTES,
    WRITE_ERRORS,
    CheckpointWriteError,
    CorruptCheckpointError,
    prune,
    step_directories,
    verify_checkpoint,
    write_checksums,
    write_problem,
)

__all__ = [
    "CHECKPOINTS_DIR",
    "AsyncCheckpointer",
    "RunCheckpointer",
    "best_checkpoint",
    "consolidate",
    "load_consolidated",
    "load_model_for_inference",
    "load_tokenizer",
    "newest_checkpoint",
    "read_meta",
    "resolve_checkpoint",
    "save_checkpoint",
]

CHECKPOINTS_DIR = "checkpoints"
BEST_FILE = "best"
"""``checkpoints/best``: JSON naming the step of the lowest validation loss (``checkpoint.keep_best``)."""
TIED_HEAD = "output.weight"
"""With tied embeddings the same tensor as ``tok_embeddings.weight``; a consolidated file omits it."""


@dataclass
class RunCheckpointer:
    """The checkpoints of one run: ``<output_dir>/checkpoints/step_N/`` with the strategy's files
    (``parallel.checkpointer``) and the step directory around them (module docstring).

    ``loader_state`` and ``mlflow_run_id`` are asked at each save (the loader moves on; the run id is
    known once tracking started). ``writer``: write in the background (module docstring); a path
    ``save`` returns is then complete once ``writer.wait()`` returns."""

    output_dir: Path
    parallel: ParallelModel
    dist: DistInfo
    config: Config
    model_args: ModelArgs
    tokenizer_file: Path
    seed: int
    keep: int
    loader_state: Callable[[], dict[str, Any]] = dict
    mlflow_run_id: Callable[[], str | None] = lambda: None
    writer: AsyncCheckpointer | None = None
    checksum_max_bytes: int = DEFAULT_CHECKSUM_MAX_BYTES
    keep_best: bool = False
    """Spare the step of the lowest validation loss from pruning (``checkpoints/best`` names it)."""

    def save(self, step: int, tokens_seen: int, progress: dict[str, Any] | None = None) -> Path:
        """Write ``checkpoints/step_<step>/`` (collective: every rank must call it); returns its path."""
        root = Path(self.output_dir) / CHECKPOINTS_DIR
        final, staging = root / f"step_{step}", root / f"step_{step}.tmp"
        if self.writer is not None:
            self.writer.wait()  # the previous write completes (or fails) before this one starts
        if self.dist.is_main:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        barrier()
        meta = self.meta(step, tokens_seen, progress)

        def complete(group: ProcessGroup | None = None, error: BaseException | None = None) -> None:
            self.complete(staging, final, meta, group=group, error=error)

        checkpointer = self.parallel.checkpointer
        if self.writer is None:
            try:
                checkpointer.save(staging)
            except WRITE_ERRORS as exc:
                complete(error=exc)
            else:
                complete()
        elif isinstance(checkpointer, AsyncSaveCheckpointer):
            self.writer.start(checkpointer.save_async(staging, process_group=self.writer.group), complete)
        else:  # the config check refuses this first (StrategyTraits.async_save)
            raise ConfigError(f"checkpoint.async_save: strategy {self.parallel.strategy} saves synchronously")
        return final

    def complete(
        self,
        staging: Path,
        final: Path,
        meta: dict[str, Any],
        *,
        group: ProcessGroup | None,
        error: BaseException | None,
    ) -> None:
        """After every rank wrote its files (or failed to: ``error``), collectively: rank 0 publishes the
        step unless a rank failed; if any rank or the publishing failed (a full disk), every rank raises
        ``CheckpointWriteError`` with rank 0's reason, the staging directory is deleted (its space is
        freed) and the checkpoints before it are untouched. No rank is left waiting on another."""
        device = "cpu" if group is not None else self.dist.device  # the background group is gloo's
        failed = int(all_reduce_sum([1.0 if error is not None else 0.0], device, group=group)[0])
        problem = f"{failed} rank(s) failed" if failed else ""
        if error is not None:
            problem = write_problem(error, staging)
        if self.dist.is_main and not failed:
            try:
                self.publish(staging, final, meta)
            except OSError as exc:
                problem = write_problem(exc, staging)
        problem = str(broadcast_object(problem, group=group))
        if not problem:
            return
        if self.dist.is_main:
            shutil.rmtree(staging, ignore_errors=True)
        previous = newest_checkpoint(self.output_dir)
        raise CheckpointWriteError(
            f"checkpoint {final} could not be written: {problem}; "
            + (f"{previous.name} is intact and " if previous is not None else "")
            + "checkpoint.resume=auto continues from it once there is room"
        )

    def meta(self, step: int, tokens_seen: int, progress: dict[str, Any] | None) -> dict[str, Any]:
        """The step's ``meta.json``."""
        adapters = adapter_config(self.parallel.model)
        return {
            "step": step,
            "tokens_seen": tokens_seen,
            "model": dataclasses.asdict(self.model_args),
            # The LoRA adapters the weights carry (None: plain weights); loaders merge them
            # (lora.saved_adapters).
            META_KEY: dataclasses.asdict(adapters) if adapters else None,
            "strategy": self.parallel.strategy,
            "world_size": self.dist.world_size,
            "loader": self.loader_state(),
            "mlflow_run_id": self.mlflow_run_id(),
            "progress": progress or {},
            # Training draws no random numbers after init (no dropout; the loaders seed their own
            # permutations), so the seed and the generator's position say all there is.
            "rng": {"seed": self.seed, "torch_initial_seed": torch.initial_seed()},
        }

    def publish(self, staging: Path, final: Path, meta: dict[str, Any]) -> None:
        """Rank 0, once the state files are written: meta, config, tokenizer, checksums (last), rename,
        ``latest``, then prune (module docstring). A step directory of the same name (a rerun from an
        earlier checkpoint) is set aside, not deleted, until the new one has taken its name."""
        (staging / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        self.config.save(staging / CONFIG_FILE)
        shutil.copyfile(self.tokenizer_file, staging / TOKENIZER_FILE)
        write_checksums(staging, hash_max_bytes=self.checksum_max_bytes)
        replaced = final.with_name(f".{final.name}.replaced")
        if final.exists():
            shutil.rmtree(replaced, ignore_errors=True)
            final.rename(replaced)
        staging.rename(final)
        atomic_write_text(final.parent / LATEST_FILE, final.name + "\n")
        best = _best(final.parent) if self.keep_best else None
        val_loss = meta["progress"].get("val_loss")
        if self.keep_best and val_loss is not None and (best is None or val_loss < best[1]):
            atomic_write_json(final.parent / BEST_FILE, {"step_dir": final.name, "val_loss": val_loss})
            best = (final, val_loss)
        prune(
            final.parent, self.keep, newest=meta["step"], spare=best[0] if self.keep_best and best else None
        )

    def close(self) -> None:
        """Wait for the write in flight (the last checkpoint is complete before the job goes), then free the
        strategy checkpointer's staging buffers."""
        if self.writer is None:
            return
        try:
            self.writer.close()
        finally:
            if isinstance(self.parallel.checkpointer, AsyncSaveCheckpointer):
                self.parallel.checkpointer.close()


def save_checkpoint(
    output_dir: str | Path,
    *,
    step: int,
    tokens_seen: int,
    loader_state: dict[str, Any],
    mlflow_run_id: str | None,
    progress: dict[str, Any] | None = None,
    **run: Any,
) -> Path:
    """One checkpoint outside a training run (tests, export): ``RunCheckpointer(output_dir, **run).save``,
    with this loader state and run id; ``run`` names the other ``RunCheckpointer`` fields."""
    checkpointer = RunCheckpointer(
        Path(output_dir), loader_state=lambda: loader_state, mlflow_run_id=lambda: mlflow_run_id, **run
    )
    return checkpointer.save(step, tokens_seen, progress)


class AsyncCheckpointer:
    """The background half of ``RunCheckpointer(..., writer=...)``: one write in flight, completed in
    a thread of its own over a gloo process group of its own (so neither the files' collectives nor
    the completing barrier ever interleave with training's collectives). Every rank makes one, in
    the same order, before the first save; ``close()`` waits for the last write."""

    def __init__(self) -> None:
        self.group: ProcessGroup | None = (
            torch.distributed.new_group(backend="gloo") if torch.distributed.is_initialized() else None
        )
        if self.group is None:
            # One process: DCP's write thread warns that it assumes a single process, which is the intent;
            # a catch_warnings block cannot reach into that thread, so this filter is process-wide.
            warnings.filterwarnings("ignore", message="torch.distributed is disabled", category=UserWarning)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._pending: Future | None = None

    def start(
        self, written: Future, complete: Callable[[ProcessGroup | None, BaseException | None], None]
    ) -> None:
        """Once ``written`` (the state files) is done, run ``complete`` (meta, rename, latest)."""

        def finish() -> None:
            try:
                written.result()
            except WRITE_ERRORS as exc:
                complete(self.group, exc)
            else:
                complete(self.group, None)

        self._pending = self._thread.submit(finish)

    def wait(self) -> None:
        """Block until the write in flight is complete; re-raise its error, if any."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._thread.shutdown()


def resolve_checkpoint(path: str | Path) -> Path:
    """A step directory itself, or the latest one of a training output dir (or of its checkpoints/);
    checked against its ``checksums.json`` (``CorruptCheckpointError`` naming the bad file)."""
    path = Path(path)
    if (path / META_FILE).is_file():
        verify_checkpoint(path)
        return path
    for root in (path / CHECKPOINTS_DIR, path):
        latest = root / LATEST_FILE
        if latest.is_file():
            step_dir = root / latest.read_text().strip()
            if not (step_dir / META_FILE).is_file():
                raise MissingInputError(f"{latest} names {step_dir.name}, which has no {META_FILE}")
            verify_checkpoint(step_dir)
            return step_dir
    if not path.exists():
        raise MissingInputError(f"checkpoint not found: {path}")
    raise MissingInputError(
        f"no checkpoint in {path} (expected a step_N/ dir with {META_FILE}, "
        f"or a training output dir with {CHECKPOINTS_DIR}/{LATEST_FILE})"
    )


def newest_checkpoint(
    output_dir: str | Path, *, hashes: bool = False, warn: Callable[[str], None] | None = None
) -> Path | None:
    """The newest complete, intact ``step_N/`` of a training output, or None. A ``.tmp`` staging
    directory left by a killed save is not one; a step that fails ``verify_checkpoint`` (``hashes``:
    its checksums too, as a resume does) is passed over for the one before, saying so through ``warn``.
    ``latest`` is not trusted: a kill between the rename and its update leaves it one step behind."""
    for step_dir in reversed(step_directories(Path(output_dir) / CHECKPOINTS_DIR)):
        try:
            verify_checkpoint(step_dir, hashes=hashes)
        except CorruptCheckpointError as exc:
            if warn is not None:
                warn(f"{exc}; passing over it for the step before")
            continue
        return step_dir
    return None


def best_checkpoint(output_dir: str | Path) -> Path | None:
    """The step directory of the lowest validation loss (``checkpoint.keep_best``), if one is recorded
    and still there."""
    best = _best(Path(output_dir) / CHECKPOINTS_DIR)
    return best[0] if best is not None else None


def _best(root: Path) -> tuple[Path, float] | None:
    """(step directory, its validation loss) as ``checkpoints/best`` records them, if that step is there."""
    record = root / BEST_FILE
    if not record.is_file():
        return None
    best = json.loads(record.read_text())
    step_dir = root / best["step_dir"]
    return (step_dir, float(best["val_loss"])) if (step_dir / META_FILE).is_file() else None


def read_meta(step_dir: str | Path) -> dict[str, Any]:
    path = Path(step_dir) / META_FILE
    try:
        return json.loads(path.read_text())
    except ValueError as exc:  # a step without checksums.json (older, imported) is checked only here
        raise CorruptCheckpointError(f"checkpoint {step_dir} is corrupt: {path} is not JSON ({exc})") from exc


def load_model_for_inference(
    path: str | Path, *, device: torch.device | str = "cpu"
) -> tuple[Transformer, ModelArgs, Tokenizer]:
    """The model (eval mode), its shape and its tokenizer from a checkpoint, in this process alone.

    Works whatever the world size that wrote it: DCP reshards on load.
    """
    step_dir = resolve_checkpoint(path)
    args = ModelArgs(**read_meta(step_dir)["model"])
    model = build_model(args)
    model.to_empty(device=device)
    model.init_weights()  # fills the RoPE tables, which are not saved
    load_model_weights(model, step_dir)
    return model.eval(), args, load_tokenizer(step_dir / TOKENIZER_FILE)


def consolidate(path: str | Path, output: str | Path) -> Path:
    """Write the model weights of a checkpoint (any strategy, any world size) as one plain safetensors
    state dict, for fine-tuning elsewhere and export; returns ``output``.

    Keys are the plain model's, tensors contiguous fp32. A tied output head shares the embedding's
    storage, which safetensors refuses, so only ``tok_embeddings.weight`` is written and
    ``load_consolidated`` re-ties it. ``<output>.json`` beside it holds the ModelArgs and provenance.
    """
    output = Path(output)
    if output.suffix != ".safetensors":
        raise InputError(f"consolidate output must end in .safetensors: {output}")
    from safetensors.torch import save_file

    step_dir = resolve_checkpoint(path)
    model, args, _ = load_model_for_inference(step_dir)
    state = {
        key: tensor.contiguous()
        for key, tensor in model.state_dict().items()
        if not (args.tie_embeddings and key == TIED_HEAD)
    }
    meta = read_meta(step_dir)
    output.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(output), metadata={"format": "pt"})
    sidecar = {
        "model": dataclasses.asdict(args),
        "checkpoint": str(step_dir.resolve()),
        "step": meta["step"],
        "tokens_seen": meta["tokens_seen"],
        "strategy": meta["strategy"],
    }
    output.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return output


def load_consolidated(path: str | Path, *, device: torch.device | str = "cpu") -> Transformer:
    """The model (eval mode) from a ``consolidate`` output and its ``.json`` sidecar."""
    from safetensors.torch import load_file

    path = Path(path)
    args = ModelArgs(**json.loads(path.with_suffix(".json").read_text())["model"])
    model = build_model(args)
    model.to_empty(device=device)
    model.init_weights()  # ties the head and fills the RoPE tables, which are not saved
    state = load_file(str(path), device=str(device))
    if args.tie_embeddings:
        state[TIED_HEAD] = state["tok_embeddings.weight"]
    model.load_state_dict(state)
    return model.eval()


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A tokenizer.json in which special-token strings inside text stay plain text (as tokenize does)."""
    if not Path(path).is_file():
        raise MissingInputError(f"tokenizer not found: {path}")
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.encode_special_tokens = True
    return tokenizer
