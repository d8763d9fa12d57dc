"""Executors run stages of picklable tasks and know nothing of what a task does (DESIGN §8).

A run is a list of ``Stage``s, each depending on the one before (data prep: ``prep`` per
input, then one ``cluster`` task, then ``dedup`` per input). ``LocalExecutor`` runs them
one after another, each in this process or one pool of worker processes; ``SlurmExecutor``
submits each as a job array (``--array=0-K%P``) that starts only after the previous one
succeeded (``--dependency=afterok``), each element a ``python -m launch.slurm.task plan.json INDEX``.
Either way a finished task leaves its completion marker, and the caller merges the stats
from the markers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Progress = Callable[[int], None]
"""Called with the number of documents read since its last call."""

TaskFn = Callable[[Any, "Progress | None"], Any]
"""``fn(task, progress)``: what the local executor runs for each task (module-level, so picklable)."""

EXECUTORS = ("local", "slurm")


class TaskFailed(RuntimeError):
    """One or more tasks failed; raised after every other task has finished. One-line message."""


@dataclass
class Stage:
    """One step of a run: its name (``completions/<name>/``), the tasks still to do, and
    ``fn(task, progress)`` that does one (picklable; the Slurm executor runs its entry instead)."""

    name: str
    tasks: list[Any] = field(default_factory=list)
    fn: TaskFn | None = None
