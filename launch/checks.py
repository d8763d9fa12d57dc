"""Checks before a Slurm submission: what would otherwise fail only after hours in the queue.

Each check is one line, passed or failed, so a user sees at once everything that is wrong
(not only the first problem). The verb's config itself was already loaded and validated by
its own class; these checks look at the machine and at how the config fits the allocation.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from launch.slurm.profile import SlurmProfile


@dataclass(frozen=True)
class Check:
    ok: bool
    line: str


@dataclass(frozen=True)
class RunNeeds:
    """What one run (one array element, or the job) asks of the machine and the allocation, as plain
    values: the launcher does not know the verbs' config classes; the CLI fills this in from them."""

    output_dir: str
    global_batch_size: int | None
    """As the config says; None only where a config leaves it to be derived."""
    batch_error: str
    """Why ``global_batch_size`` does not split over the profile's ranks; empty: it does."""
    precision: str
    backend: str
    shards: list[str] = field(default_factory=list)
    """Token-shard directories the run reads (their manifest and files must be there)."""
    resume: str = ""
    """``checkpoint.resume`` of a run that resumes after a requeue; empty: the run does not."""


def preflight(profile: SlurmProfile, runs: Sequence[RunNeeds]) -> list[Check]:
    """Every check for submitting ``runs`` (one per array element, or one; none for a verb that
    trains nothing) with ``profile``."""
    checks = [_sbatch_found(), _writable(Path(profile.log_dir), "log_dir")]
    for run in runs:
        checks.append(_writable(Path(run.output_dir), "output_dir"))
        checks.extend(_fits_allocation(run, profile))
        checks.extend(_shards_present(run.shards))
        if run.resume:
            checks.append(_resumes_after_requeue(run.resume, profile))
    return checks


def _sbatch_found() -> Check:
    path = shutil.which("sbatch")
    if not path:
        return Check(False, "sbatch not found on PATH; is this a Slurm login node?")
    return Check(True, f"sbatch found: {path}")


def _writable(directory: Path, key: str) -> Check:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".lmpipe-write-test-"):
            pass
    except OSError as exc:
        return Check(False, f"{key} {directory} is not writable: {exc.strerror or exc}")
    return Check(True, f"{key} {directory} is writable")


def _shards_present(directories: Sequence[str]) -> list[Check]:
    """The manifest, the tokenizer it names and every shard it lists, for each shards directory used."""
    checks = []
    for directory in sorted(set(filter(None, directories))):
        manifest_path = Path(directory) / "manifest.json"
        if not manifest_path.is_file():
            checks.append(
                Check(
                    False,
                    f"no token shards at {directory} (manifest.json missing); "
                    "run `lmpipe data tokenize` first",
                )
            )
            continue
        manifest = json.loads(manifest_path.read_text())
        needed = [manifest["tokenizer"]["path"], *(shard["path"] for shard in manifest["shards"])]
        missing = [name for name in needed if not (Path(directory) / name).is_file()]
        if missing:
            checks.append(
                Check(
                    False,
                    f"shards {directory}: {len(missing)} file(s) listed in manifest.json are "
                    f"missing, e.g. {missing[0]}",
                )
            )
        else:
            checks.append(
                Check(True, f"shards {directory}: {len(manifest['shards'])} shard(s) and the tokenizer")
            )
    return checks


def _fits_allocation(run: RunNeeds, profile: SlurmProfile) -> list[Check]:
    """The batch splits over the ranks asked for, and the precision and backend suit the devices."""
    world = profile.world_size
    tasks = f" x {profile.tasks_per_node} task(s)" if profile.tasks_per_node > 1 else ""
    where = f"{profile.nodes} node(s){tasks} x {profile.ranks_per_node} rank(s) = {world} ranks"
    if run.batch_error:
        checks = [Check(False, f"{run.batch_error} ({where})")]
    else:
        checks = [Check(True, f"batch {run.global_batch_size} splits over {where}")]
    if not profile.gpus_per_node:
        if run.precision == "bf16":
            checks.append(
                Check(
                    False,
                    "train.precision=bf16 on CPU-only nodes (gpus_per_node=0) is ~20x slower "
                    "than fp32; set train.precision=fp32 or ask for GPUs",
                )
            )
        if run.backend == "nccl":
            checks.append(
                Check(
                    False, "parallel.backend=nccl needs GPUs, but the profile asks for none (gpus_per_node=0)"
                )
            )
    return checks


def _resumes_after_requeue(resume: str, profile: SlurmProfile) -> Check:
    if profile.max_requeues and resume != "auto":
        return Check(
            False,
            f"checkpoint.resume={resume!r}: a requeued job would not continue from "
            "its checkpoint; use checkpoint.resume=auto (or max_requeues=0)",
        )
    return Check(True, "a requeued job resumes from its newest checkpoint (checkpoint.resume=auto)")
