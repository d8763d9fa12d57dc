"""Run stages as Slurm job arrays: ``sbatch --array=0-<K-1>%<P>``, one element per task.

For each stage the parent writes ``<workdir>/<stage>/plan.json`` (the caller's resolved config,
the stage name and its task list) and a readable ``<workdir>/<stage>/<stage>.sbatch`` whose
body runs ``python -m <entry> plan.json $SLURM_ARRAY_TASK_ID``. It submits every stage at
once, each after the previous with ``--dependency=afterok:<job>`` and
``--kill-on-invalid-dep=yes`` (a failed stage cancels the ones after it instead of leaving
them pending forever), prints the job ids, and polls ``squeue`` until all have left the
queue, printing each stage's finished-task count as it changes. Whether a task succeeded is
read from the caller's ``is_done(stage, task)`` (a completion marker), not from Slurm's
accounting, which may be off. Element ``i`` of a stage logs to
``<workdir>/logs/<job-name>-<stage>-<job id>_<i>.out``.
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

from data_prep.executor import Progress, Stage, TaskFailed
from launch.slurm import submit

TASK_MAIN = "data_prep.executor.task_main"
LOG_PATTERN = "%x-%A_%a.out"
"""Slurm's filename pattern: job name, array job id, array index."""
MAX_QUEUE_ERRORS = 20
"""Consecutive failed ``squeue`` calls (controller unreachable) before giving up on the job."""


def render_script(
    cfg: Any,
    n_tasks: int,
    plan_path: str | Path,
    log_dir: str | Path,
    *,
    job_name: str,
    depends_on: str | None = None,
    python: str = sys.executable,
    entry: str = TASK_MAIN,
) -> str:
    """The sbatch script for ``n_tasks`` array elements; ``cfg`` is a ``SlurmExecutorConfig``."""
    if n_tasks < 1:
        raise ValueError("a job array needs at least one task")
    q = shlex.quote
    array = f"0-{n_tasks - 1}" + (f"%{cfg.max_parallel}" if cfg.max_parallel else "")
    options = [
        f"--job-name={q(job_name)}",
        f"--array={array}",
        f"--output={q(str(Path(log_dir) / LOG_PATTERN))}",
    ]
    if depends_on:
        options += [f"--dependency=afterok:{depends_on}", "--kill-on-invalid-dep=yes"]
    if cfg.partition:
        options.append(f"--partition={q(cfg.partition)}")
    if cfg.time:
        options.append(f"--time={q(cfg.time)}")
    if cfg.cpus_per_task:
        options.append(f"--cpus-per-task={int(cfg.cpus_per_task)}")
    if cfg.mem:
        options.append(f"--mem={q(cfg.mem)}")
    options.extend(q(arg) for arg in cfg.sbatch_args)
    lines = [
        "#!/bin/bash",
        *(f"#SBATCH {option}" for option in options),
        "",
        f"# Written by lmpipe: {n_tasks} array element(s), one per task listed in {plan_path}.",
        "# Each element runs its task and leaves a completion marker; a rerun skips finished ones.",
        "set -euo pipefail",
        'echo "lmpipe: array task ${SLURM_ARRAY_TASK_ID} of job ${SLURM_ARRAY_JOB_ID} on $(hostname)"',
        f'exec {q(python)} -m {q(entry)} {q(str(plan_path))} "${{SLURM_ARRAY_TASK_ID}}"',
        "",
    ]
    return "\n".join(lines)


class SlurmExecutor:
    def __init__(
        self,
        cfg: Any,
        workdir: str | Path,
        config: dict[str, Any],
        is_done: Callable[[str, Any], bool],
        entry: str = TASK_MAIN,
    ) -> None:
        """``cfg``: a ``SlurmExecutorConfig``; ``workdir``: where plans, scripts and logs/ go; ``config``:
        the resolved config the elements rebuild; ``is_done(stage, task)``: its completion marker exists."""
        self.cfg = cfg
        self.workdir = Path(workdir)
        self.config = config
        self.is_done = is_done
        self.entry = entry
        self.job_ids: dict[str, str] = {}

    def plan_path(self, stage: str) -> Path:
        return self.workdir / stage / "plan.json"

    def script_path(self, stage: str) -> Path:
        return self.workdir / stage / f"{stage}.sbatch"

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    def job_name(self, stage: str) -> str:
        return f"{self.cfg.job_name}-{stage}"

    def log_path(self, stage: str, index: int) -> Path:
        return self.log_dir / f"{self.job_name(stage)}-{self.job_ids[stage]}_{index}.out"

    def run_stages(self, stages: Sequence[Stage], progress: Progress | None = None) -> None:
        """Submit every stage that has tasks, each depending on the one before, and wait for all.
        ``progress`` and the stages' ``fn`` are not used: elements run ``entry``, which rebuilds the
        config from plan.json. Raises TaskFailed, naming log files, for the first stage whose
        tasks did not all finish (the stages after it were cancelled by Slurm)."""
        stages = [stage for stage in stages if stage.tasks]
        self.job_ids = {}
        previous: str | None = None
        try:
            for stage in stages:
                self.write_plan(stage)
                self.job_ids[stage.name] = self.submit(stage, previous)
                cap = f", at most {self.cfg.max_parallel} at a time" if self.cfg.max_parallel else ""
                after = f", after job {previous}" if previous else ""
                _say(
                    f"submitted Slurm job array {self.job_ids[stage.name]} for stage {stage.name} "
                    f"({len(stage.tasks)} task(s){cap}{after}); logs in {self.log_dir}"
                )
                previous = self.job_ids[stage.name]
            if stages:
                self.wait(stages)
        except BaseException:
            if self.job_ids:
                subprocess.run(
                    ["scancel", *self.job_ids.values()],
                    capture_output=True,
                    timeout=60,
                    stdin=subprocess.DEVNULL,
                    check=False,
                )
            raise
        for stage in stages:
            failed = [index for index, task in enumerate(stage.tasks) if not self.is_done(stage.name, task)]
            if failed:
                logs = ", ".join(str(self.log_path(stage.name, index)) for index in failed[:5])
                more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
                raise TaskFailed(
                    f"{len(failed)} of {len(stage.tasks)} {stage.name} task(s) of Slurm job "
                    f"{self.job_ids[stage.name]} failed; see {logs}{more}"
                )

    def write_plan(self, stage: Stage) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)  # Slurm does not create the log directory
        plan = {"stage": stage.name, "config": self.config, "tasks": [_as_dict(task) for task in stage.tasks]}
        _write_atomic(self.plan_path(stage.name), json.dumps(plan, indent=2, ensure_ascii=False) + "\n")

    def submit(self, stage: Stage, depends_on: str | None = None) -> str:
        """Write the stage's sbatch script (after ``write_plan``) and submit it; returns the job id."""
        script_path = self.script_path(stage.name)
        _write_atomic(
            script_path,
            render_script(
                self.cfg,
                len(stage.tasks),
                self.plan_path(stage.name).resolve(),
                self.log_dir.resolve(),
                job_name=self.job_name(stage.name),
                depends_on=depends_on,
                entry=self.entry,
            ),
        )
        try:
            return submit(script_path)
        except (FileNotFoundError, ValueError) as exc:
            raise TaskFailed(f"executor slurm: {exc}") from None

    def wait(self, stages: Sequence[Stage]) -> None:
        """Poll ``squeue`` until no element of any job is pending, running or completing; print
        each stage's finished tasks whenever that count changes."""
        jobs = ",".join(self.job_ids[stage.name] for stage in stages)
        deadline = time.monotonic() + self.cfg.timeout_minutes * 60 if self.cfg.timeout_minutes else None
        errors, last_report = 0, ""
        while True:
            report = ", ".join(
                f"{stage.name} {sum(self.is_done(stage.name, t) for t in stage.tasks)}/{len(stage.tasks)}"
                for stage in stages
            )
            if report != last_report:
                _say(f"slurm: done {report}")
                last_report = report
            proc = subprocess.run(
                ["squeue", "--noheader", "--jobs", jobs, "--format=%i %T"],
                capture_output=True,
                text=True,
                timeout=60,
                stdin=subprocess.DEVNULL,
                check=False,
            )
            if proc.returncode == 0 and not proc.stdout.strip():
                return
            if proc.returncode != 0:
                if "invalid job id" in proc.stderr.lower():  # already purged from the controller
                    return
                errors += 1
                if errors >= MAX_QUEUE_ERRORS:
                    raise TaskFailed(f"squeue failed {errors} times for job(s) {jobs}: {proc.stderr.strip()}")
            else:
                errors = 0
            if deadline is not None and time.monotonic() > deadline:
                raise TaskFailed(
                    f"Slurm job(s) {jobs} still running after {self.cfg.timeout_minutes} min; cancelled"
                )
            time.sleep(self.cfg.poll_seconds)


def _say(message: str) -> None:
    print(f"lmpipe: {message}", file=sys.stderr, flush=True)


def _as_dict(task: Any) -> Any:
    return dataclasses.asdict(task) if dataclasses.is_dataclass(task) else task


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text)
    os.replace(temp, path)
