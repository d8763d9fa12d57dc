"""Inputs that could not be read at all: a URL still failing after its last retry.

Such an input neither crashes the run nor leaves a silent gap in it. Its ``prep`` task deletes what
it had written and records the failure in ``completions/prep/<task>.failed`` instead of a ``.done``
marker: one ``read/remote_failed`` error in stats.json, its example the reason with the URL. The task
itself ends normally, so every other input goes through every stage (``cluster`` and ``dedup`` leave
the failed one out) and is written to ``docs/``. The run then writes stats.json, with a ``failed``
section naming each failed input, keeps ``filtered/`` and raises :class:`InputsFailed` (the CLI prints
its one line and exits 1).

A rerun finds no ``.done`` marker for a failed input, so it redoes that input's ``prep`` task only,
then ``cluster`` and every ``dedup`` task (the new input may hold the first copy of a document that
another input's copy stood in for), and ends with exactly the output of a run that never failed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from data_prep.executor import TaskFailed
from data_prep.inputs import RemoteInputError
from data_prep.stats import StageStats

REMOTE_FAILED = "remote_failed"
"""The ``read`` error kind of an input that could not be read, even after retries."""
SHOWN = 3
"""Failed inputs the error line spells out; stats.json lists them all."""


class InputsFailed(TaskFailed):
    """Some inputs could not be read; every other one was written. ``stats`` is what stats.json holds."""

    def __init__(self, message: str, stats: dict[str, Any]) -> None:
        super().__init__(message)
        self.stats = stats


def failure_marker(done_marker: Path) -> Path:
    """``completions/prep/<task>.failed``, beside the task's ``.done`` marker."""
    return done_marker.with_suffix(".failed")


def failure_result(path: str, fmt: str, error: RemoteInputError, seconds: float) -> dict[str, Any]:
    """What a failed task's marker holds: the shape of a finished task's, with one input (the file) and
    one error (why it could not be read) in its read stage, and no document."""
    read = StageStats(input=1, seconds=seconds)
    read.error(REMOTE_FAILED, str(error))
    return {
        "path": path,
        "format": fmt,
        "shards": [],
        "error": str(error),
        "seconds": round(seconds, 3),
        "stages": {"read": read.to_dict()},
    }


def failure_message(failed: dict[str, str], inputs: int) -> str:
    """One line: how many inputs failed and why (each reason names its URL), and what to do."""
    reasons = "; ".join(list(failed.values())[:SHOWN])
    more = f" (and {len(failed) - SHOWN} more)" if len(failed) > SHOWN else ""
    one = len(failed) == 1
    return (
        f"{len(failed)} of {inputs} inputs could not be read and {'is' if one else 'are'} not in docs/: "
        f"{reasons}{more}; the other {inputs - len(failed)} went through every stage (stats.json: "
        f"read/{REMOTE_FAILED}); rerun the same command to retry only {'it' if one else 'them'}"
    )
