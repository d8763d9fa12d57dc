"""Run stages as Slurm job arrays: ``sbatch --array=0-<K-1>%<P>``, one element per task.

The Slurm side is ``launch.slurm``'s, shared with every other job lmpipe submits: the config's
``slurm:`` section is a ``SlurmArrayProfile`` (a ``SlurmProfile``), each stage's script is rendered
by its one sbatch renderer, each element runs its one entry point (``python -m launch.slurm.task
plan.json INDEX``, which finds the stage's job kind), and the waiting reads its one job-state reader.

For each stage the parent writes ``<workdir>/<stage>/plan.json`` (the caller's resolved config,
the stage name and its task list) and a readable ``<workdir>/<stage>/<stage>.sbatch``. It submits
every stage at once, each after the previous with ``--dependency=afterok:<job>`` and
``--kill-on-invalid-dep=yes`` (a failed stage cancels the ones after it instead of leaving them
pending forever), prints the job ids, and polls the jobs' states until none is pending or running,
printing each stage's finished-task count as it changes. Whether a task succeeded is read from the
caller's ``is_done(stage, task)`` (a completion marker), not from Slurm's accounting, which may be
off. Element ``i`` of a stage logs to ``<log_dir>/<job-name>-<stage>-<job id>_<i>.out``, a relative
``log_dir`` (by default ``logs``) being taken from ``<workdir>``.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from data_prep.executor import Progress, Stage, TaskFailed
from launch.slurm.profile import SlurmArrayProfile
from launch.slurm.sbatch import TaskArray, render_task_array, submit
from launch.slurm.state import any_active
from pipeline.core.errors import UserError
from pipeline.core.files import atomic_write_json, atomic_write_text

MAX_QUEUE_ERRORS = 20
"""Consecutive polls in which Slurm knew none of the jobs (controller unreachable) before giving up."""


def render_script(
    profile: SlurmArrayProfile,
    n_tasks: int,
    plan_path: str | Path,
    log_dir: str | Path,
    *,
    job_name: str,
    depends_on: str = "",
    python: str = sys.executable,
) -> str:
    """The sbatch script for ``n_tasks`` array elements of ``profile``, logging to ``log_dir`` (the
    executor's resolved one, which replaces the profile's possibly relative ``log_dir``)."""
    cap = profile.max_parallel
    array = TaskArray(job_name, os.getcwd(), str(plan_path), n_tasks, cap, depends_on, python)
    return render_task_array(dataclasses.replace(profile, log_dir=str(log_dir)), array)


class SlurmExecutor:
    def __init__(
        self,
        cfg: SlurmArrayProfile,
        workdir: str | Path,
        config: dict[str, Any],
        is_done: Callable[[str, Any], bool],
    ) -> None:
        """``cfg``: the ``slurm:`` section; ``workdir``: where plans, scripts and logs go; ``config``:
        the resolved config the elements rebuild; ``is_done(stage, task)``: its completion marker exists."""
        self.cfg = cfg
        self.workdir = Path(workdir)
        self.config = config
        self.is_done = is_done
        self.job_ids: dict[str, str] = {}

    def plan_path(self, stage: str) -> Path:
        return self.workdir / stage / "plan.json"

    def script_path(self, stage: str) -> Path:
        return self.workdir / stage / f"{stage}.sbatch"

    @property
    def log_dir(self) -> Path:
        return self.workdir / self.cfg.log_dir  # an absolute log_dir stays as it is

    def job_name(self, stage: str) -> str:
        return f"{self.cfg.job_name}-{stage}"

    def log_path(self, stage: str, index: int) -> Path:
        return self.log_dir / f"{self.job_name(stage)}-{self.job_ids[stage]}_{index}.out"

    def run_stages(self, stages: Sequence[Stage], progress: Progress | None = None) -> None:
        """Submit every stage that has tasks, each depending on the one before, and wait for all.
        ``progress`` and the stages' ``fn`` are not used: elements run ``launch.slurm.task``, which
        rebuilds the config from plan.json. Raises TaskFailed, naming log files, for the first stage
        whose tasks did not all finish (the stages after it were cancelled by Slurm)."""
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
        self.plan_path(stage.name).parent.mkdir(parents=True, exist_ok=True)
        plan = {"stage": stage.name, "config": self.config, "tasks": [_as_dict(task) for task in stage.tasks]}
        atomic_write_json(self.plan_path(stage.name), plan)

    def submit(self, stage: Stage, depends_on: str | None = None) -> str:
        """Write the stage's sbatch script (after ``write_plan``) and submit it; returns the job id."""
        script_path = self.script_path(stage.name)
        try:
            atomic_write_text(
                script_path,
                render_script(
                    self.cfg,
                    len(stage.tasks),
                    self.plan_path(stage.name).resolve(),
                    self.log_dir.resolve(),
                    job_name=self.job_name(stage.name),
                    depends_on=depends_on or "",
                ),
            )
            return submit(script_path)
        except UserError as exc:
            raise TaskFailed(f"executor slurm: {exc}") from None

    def wait(self, stages: Sequence[Stage]) -> None:
        """Poll the jobs' states until no element of any job is pending or running; print each
        stage's finished tasks whenever that count changes."""
        job_ids = [self.job_ids[stage.name] for stage in stages]
        jobs = ",".join(job_ids)
        deadline = time.monotonic() + self.cfg.timeout_minutes * 60 if self.cfg.timeout_minutes else None
        unknown, last_report = 0, ""
        while True:
            report = ", ".join(
                f"{stage.name} {sum(self.is_done(stage.name, t) for t in stage.tasks)}/{len(stage.tasks)}"
                for stage in stages
            )
            if report != last_report:
                _say(f"slurm: done {report}")
                last_report = report
            active = any_active(job_ids)
            if active is False:
                return
            unknown = unknown + 1 if active is None else 0
            if unknown >= MAX_QUEUE_ERRORS:
                raise TaskFailed(
                    f"neither scontrol, sacct nor squeue knew job(s) {jobs} in {unknown} polls in a row"
                )
            if deadline is not None and time.monotonic() > deadline:
                raise TaskFailed(
                    f"Slurm job(s) {jobs} still running after {self.cfg.timeout_minutes} min; cancelled"
                )
            time.sleep(self.cfg.poll_seconds)


def _say(message: str) -> None:
    print(f"lmpipe: {message}", file=sys.stderr, flush=True)


def _as_dict(task: Any) -> Any:
    return dataclasses.asdict(task) if dataclasses.is_dataclass(task) and not isinstance(task, type) else task
