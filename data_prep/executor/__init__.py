"""Executors run a list of picklable tasks and know nothing of stages (DESIGN §8).

``LocalExecutor`` runs them in this process or a spawned process pool; ``SlurmExecutor``
runs them as one Slurm job array (``--array=0-K%P``), each element a
``python -m data_prep.executor.task_main plan.json INDEX``. Either way a finished task
leaves its completion marker, and the caller merges the stats from the markers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Progress = Callable[[int], None]
"""Called with the number of documents read since its last call."""

TaskFn = Callable[[Any, "Progress | None"], Any]
"""``fn(task, progress)``: what the local executor runs for each task (module-level, so picklable)."""

EXECUTORS = ("local", "slurm")


class TaskFailed(RuntimeError):
    """One or more tasks failed; raised after every other task has finished. One-line message."""
