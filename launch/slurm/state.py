"""The one job-state reader: where a submitted job stands, one entry per job-array element.

Used by ``lmpipe launch status JOB`` and by the data-prep executor while it waits for its arrays.
Read from ``scontrol show job`` first: slurmctld keeps running jobs and ones that ended less than
``MinJobAge`` ago (5 minutes by default), with the reason a job waits and its restarts (requeues),
and it works where accounting is disabled. An older job is looked up in ``sacct`` (the accounting
database), where the cluster has one. Last ``squeue``, which lists only jobs still queued or
running: where it answers but lists none of the job, the job has left the queue (``ENDED``), its
final state no longer kept. Where none of them knows the job, the answer is empty.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.core.errors import InputError

_JOB_ID = re.compile(r"\d+(_\d+)?")
ENDED = "ENDED"
"""The state of a job ``squeue`` no longer lists and nothing else remembers: it ended, how is not known."""
ACTIVE_STATES = frozenset(
    {
        "PENDING",
        "CONFIGURING",
        "RUNNING",
        "COMPLETING",
        "SUSPENDED",
        "REQUEUED",
        "REQUEUE_HOLD",
        "REQUEUE_FED",
        "RESIZING",
        "SIGNALING",
        "STAGE_OUT",
        "STOPPED",
        "RESV_DEL_HOLD",
    }
)
"""States of a job that has not ended yet (it may still run, or run again)."""


@dataclass(frozen=True)
class JobState:
    job: str
    """``123``, or ``123_4`` for element 4 of array job 123 (``123_[5-7%2]``: elements not started yet)."""
    state: str
    """PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, PREEMPTED, ..., or ``ENDED``."""
    reason: str = ""
    """Why it waits or why it ended (``BeginTime`` after a requeue, ``NonZeroExitCode``); empty when none."""
    exit_code: str = ""
    """``status:signal`` of the batch script."""
    restarts: str = ""
    """How often it was requeued; empty when the source does not say (sacct, squeue)."""
    run_time: str = ""

    @property
    def active(self) -> bool:
        """Not ended: pending, running, or about to run again (``CANCELLED by 0`` is ended)."""
        return self.state.split(" ")[0] in ACTIVE_STATES


def job_states(job_id: str) -> list[JobState]:
    """Every element of ``job_id`` (one entry for a job that is not an array); empty where Slurm does not
    know it."""
    if not _JOB_ID.fullmatch(job_id):
        raise InputError(
            f"job id {job_id!r}: give the number sbatch printed (or ID_INDEX for one array element)"
        )
    text = _run(["scontrol", "show", "job", "--oneliner", job_id])
    if text is not None:
        return parse_scontrol(text)
    text = _run(
        [
            "sacct",
            "--jobs",
            job_id,
            "--allocations",
            "--noheader",
            "--parsable2",
            "--format=JobID,State,ExitCode,Elapsed",
        ]
    )
    if text:
        return parse_sacct(text)
    text = _run(["squeue", "--noheader", "--jobs", job_id, "--format=%i|%T|%r|%M"])
    if text is None:
        return []
    return parse_squeue(text) or [JobState(job_id, ENDED)]


def any_active(job_ids: Sequence[str]) -> bool | None:
    """Whether any element of any of the jobs has not ended; None when Slurm knows none of them
    (the controller unreachable, or every job purged): the caller decides how long to ask again."""
    known = False
    for job_id in job_ids:
        states = job_states(job_id)
        if any(state.active for state in states):
            return True
        known = known or bool(states)
    return False if known else None


def parse_scontrol(text: str) -> list[JobState]:
    """``scontrol show job --oneliner`` output: one record a line, ``Key=Value`` separated by spaces."""
    states = []
    for line in text.splitlines():
        fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
        if "JobState" not in fields:
            continue
        job = fields["JobId"]
        if fields.get("ArrayTaskId", "N/A") != "N/A":
            task = fields["ArrayTaskId"]
            job = f"{fields['ArrayJobId']}_{task if task.isdigit() else f'[{task}]'}"
        reason = fields.get("Reason", "None")
        states.append(
            JobState(
                job,
                fields["JobState"],
                "" if reason == "None" else reason,
                fields.get("ExitCode", ""),
                fields.get("Restarts", ""),
                fields.get("RunTime", ""),
            )
        )
    return sorted(states, key=_order)


def parse_sacct(text: str) -> list[JobState]:
    """``sacct --parsable2`` lines ``JobID|State|ExitCode|Elapsed``."""
    states = []
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) == 4:
            job, state, exit_code, elapsed = parts
            states.append(JobState(job, state, exit_code=exit_code, run_time=elapsed))
    return sorted(states, key=_order)


def parse_squeue(text: str) -> list[JobState]:
    """``squeue --format=%i|%T|%r|%M`` lines ``JobID|State|Reason|Time``."""
    states = []
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 4:
            job, state, reason, run_time = parts
            states.append(JobState(job, state, "" if reason == "None" else reason, run_time=run_time))
    return sorted(states, key=_order)


def format_states(states: list[JobState]) -> str:
    rows = [
        ("JOB", "STATE", "REASON", "EXIT", "RESTARTS", "TIME"),
        *(
            (s.job, s.state, s.reason or "-", s.exit_code or "-", s.restarts or "-", s.run_time or "-")
            for s in states
        ),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows
    )


def _order(state: JobState) -> tuple[int, ...]:
    """Array elements in index order, the not-yet-started range ``ID_[...]`` last."""
    numbers = [int(part) for part in re.findall(r"\d+", state.job)]
    return (numbers[0], 1 if "[" in state.job else 0, *numbers[1:])


def _run(command: list[str]) -> str | None:
    """The command's output; None where it is missing or fails (unknown job, accounting disabled)."""
    try:
        proc = subprocess.run(
            command, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False
        )
    except FileNotFoundError:
        return None
    return proc.stdout if proc.returncode == 0 else None
