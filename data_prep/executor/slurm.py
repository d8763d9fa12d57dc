"""Run tasks as one Slurm job array: ``sbatch --array=0-<K-1>%<P>``, one element per task.

The parent writes ``<workdir>/plan.json`` (the caller's resolved config + the task list) and a
readable ``<workdir>/prep.sbatch`` whose body runs ``python -m data_prep.executor.task_main
plan.json $SLURM_ARRAY_TASK_ID``; it submits the script, prints the job id, and polls ``squeue``
until every element has left the queue. Whether an element succeeded is read from the caller's
``is_done(task)`` (a completion marker), not from Slurm's accounting, which may be off.
Element ``i`` logs to ``<workdir>/logs/<job-name>-<job id>_<i>.out``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from data_prep.executor import Progress, TaskFailed, TaskFn

TASK_MAIN = "data_prep.executor.task_main"
LOG_PATTERN = "%x-%A_%a.out"
"""Slurm's filename pattern: job name, array job id, array index."""
MAX_QUEUE_ERRORS = 20
"""Consecutive failed ``squeue`` calls (controller unreachable) before giving up on the job."""


def render_script(cfg: Any, n_tasks: int, plan_path: str | Path, log_dir: str | Path,
                  python: str = sys.executable, entry: str = TASK_MAIN) -> str:
    """The sbatch script for ``n_tasks`` array elements; ``cfg`` is a ``SlurmExecutorConfig``."""
    if n_tasks < 1:
        raise ValueError("a job array needs at least one task")
    q = shlex.quote
    array = f"0-{n_tasks - 1}" + (f"%{cfg.max_parallel}" if cfg.max_parallel else "")
    options = [f"--job-name={q(cfg.job_name)}", f"--array={array}",
               f"--output={q(str(Path(log_dir) / LOG_PATTERN))}"]
    if cfg.partition:
        options.append(f"--partition={q(cfg.partition)}")
    if cfg.time:
        options.append(f"--time={q(cfg.time)}")
    if cfg.cpus_per_task:
        options.append(f"--cpus-per-task={int(cfg.cpus_per_task)}")
    if cfg.mem:
        options.append(f"--mem={q(cfg.mem)}")
    options.extend(q(arg) for arg in cfg.sbatch_args)
    lines = ["#!/bin/bash", *(f"#SBATCH {option}" for option in options),
             "",
             f"# Written by lmpipe: {n_tasks} array element(s), one per task listed in {plan_path}.",
             "# Each element runs its task and leaves a completion marker; a rerun skips finished ones.",
             "set -euo pipefail",
             'echo "lmpipe: array task ${SLURM_ARRAY_TASK_ID} of job ${SLURM_ARRAY_JOB_ID} on $(hostname)"',
             f'exec {q(python)} -m {q(entry)} {q(str(plan_path))} "${{SLURM_ARRAY_TASK_ID}}"',
             ""]
    return "\n".join(lines)


class SlurmExecutor:
    def __init__(self, cfg: Any, workdir: str | Path, config: dict[str, Any],
                 is_done: Callable[[Any], bool], entry: str = TASK_MAIN) -> None:
        """``cfg``: a ``SlurmExecutorConfig``; ``workdir``: where plan.json, prep.sbatch and logs/ go;
        ``config``: the resolved config the elements rebuild; ``is_done(task)``: its completion marker exists."""
        self.cfg = cfg
        self.workdir = Path(workdir)
        self.config = config
        self.is_done = is_done
        self.entry = entry
        self.job_id: str | None = None

    @property
    def plan_path(self) -> Path:
        return self.workdir / "plan.json"

    @property
    def script_path(self) -> Path:
        return self.workdir / "prep.sbatch"

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    def log_path(self, index: int) -> Path:
        return self.log_dir / f"{self.cfg.job_name}-{self.job_id}_{index}.out"

    def run(self, tasks: Sequence[Any], fn: TaskFn | None = None, progress: Progress | None = None) -> None:
        """Run every task as an array element and wait for all of them. ``fn`` is not used: the
        elements run ``task_main``, which rebuilds the config from plan.json. With no task, nothing is
        submitted. Raises TaskFailed, naming the log files, if any element left its task unfinished."""
        tasks = list(tasks)
        if not tasks:
            return
        self.write_plan(tasks)
        self.job_id = self.submit()
        print(f"lmpipe: submitted Slurm job array {self.job_id} ({len(tasks)} task(s)"
              f"{f', at most {self.cfg.max_parallel} at a time' if self.cfg.max_parallel else ''}); "
              f"logs in {self.log_dir}", file=sys.stderr, flush=True)
        try:
            self.wait(self.job_id)
        except BaseException:
            subprocess.run(["scancel", self.job_id], capture_output=True, timeout=60, stdin=subprocess.DEVNULL, check=False)
            raise
        failed = [index for index, task in enumerate(tasks) if not self.is_done(task)]
        if failed:
            logs = ", ".join(str(self.log_path(index)) for index in failed[:5])
            more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
            raise TaskFailed(f"{len(failed)} of {len(tasks)} task(s) of Slurm job {self.job_id} failed; "
                             f"see {logs}{more}")

    def write_plan(self, tasks: Sequence[Any]) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)  # Slurm does not create the log directory
        plan = {"config": self.config, "tasks": [_as_dict(task) for task in tasks]}
        _write_atomic(self.plan_path, json.dumps(plan, indent=2, ensure_ascii=False) + "\n")
        _write_atomic(self.script_path, render_script(self.cfg, len(tasks), self.plan_path.resolve(),
                                                      self.log_dir.resolve(), entry=self.entry))

    def submit(self) -> str:
        try:
            proc = subprocess.run(["sbatch", "--parsable", str(self.script_path)], capture_output=True,
                                  text=True, timeout=120, stdin=subprocess.DEVNULL, check=False)
        except FileNotFoundError:
            raise TaskFailed("executor slurm: sbatch not found on PATH; is this a Slurm login node?") from None
        if proc.returncode != 0:
            reason = (proc.stderr.strip() or proc.stdout.strip() or f"exit {proc.returncode}").splitlines()[-1]
            raise TaskFailed(f"sbatch {self.script_path} failed: {reason}")
        return proc.stdout.strip().split(";")[0]

    def wait(self, job_id: str) -> None:
        """Poll ``squeue`` until no element of the array is pending, running or completing."""
        deadline = time.monotonic() + self.cfg.timeout_minutes * 60 if self.cfg.timeout_minutes else None
        errors = 0
        while True:
            proc = subprocess.run(["squeue", "--noheader", "--jobs", job_id, "--format=%i %T"], capture_output=True,
                                  text=True, timeout=60, stdin=subprocess.DEVNULL, check=False)
            if proc.returncode == 0 and not proc.stdout.strip():
                return
            if proc.returncode != 0:
                if "invalid job id" in proc.stderr.lower():  # already purged from the controller
                    return
                errors += 1
                if errors >= MAX_QUEUE_ERRORS:
                    raise TaskFailed(f"squeue failed {errors} times for job {job_id}: {proc.stderr.strip()}")
            else:
                errors = 0
            if deadline is not None and time.monotonic() > deadline:
                raise TaskFailed(f"Slurm job {job_id} still running after {self.cfg.timeout_minutes} min; cancelled")
            time.sleep(self.cfg.poll_seconds)


def _as_dict(task: Any) -> Any:
    return dataclasses.asdict(task) if dataclasses.is_dataclass(task) else task


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text)
    os.replace(temp, path)
