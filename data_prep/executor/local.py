"""Run tasks here: one after another, or (``workers > 1``) in a pool of spawned processes."""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from queue import Empty
from typing import Any

from data_prep.executor import Progress, Stage, TaskFn


class LocalExecutor:
    def __init__(self, workers: int = 1) -> None:
        self.workers = workers

    def run_stages(self, stages: Sequence[Stage], progress: Progress | None = None) -> None:
        """Each stage's tasks, stage after stage: a stage starts when the one before has finished."""
        for stage in stages:
            assert stage.fn is not None, f"stage {stage.name} has no function to run"
            self.run(stage.tasks, stage.fn, progress)

    def run(self, tasks: Sequence[Any], fn: TaskFn, progress: Progress | None = None) -> None:
        """Call ``fn(task, progress)`` for every task; the first failure is re-raised after the others finish.

        ``fn`` and the tasks must be picklable when ``workers > 1`` (a module-level function or a
        ``functools.partial`` of one)."""
        if self.workers > 1 and len(tasks) > 1:
            _run_in_pool(list(tasks), fn, self.workers, progress)
        else:
            for task in tasks:
                fn(task, progress)


_worker_queue: Any = None


def _run_in_pool(tasks: list[Any], fn: TaskFn, workers: int, progress: Progress | None) -> None:
    """Tasks run in spawned processes (fork is unsafe beside the progress bar's thread);
    their progress comes back through a queue the parent drains while it waits."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue() if progress is not None else None
    with ProcessPoolExecutor(
        max_workers=min(workers, len(tasks)), mp_context=context, initializer=_init_worker, initargs=(queue,)
    ) as pool:
        futures = [pool.submit(_run_in_worker, fn, task) for task in tasks]
        running = set(futures)
        while running:
            _, running = wait(running, timeout=0.2, return_when=FIRST_COMPLETED)
            _drain(queue, progress)
    _drain(queue, progress)
    for future in futures:
        future.result()  # re-raise the first failure, after the other tasks have finished


def _init_worker(queue: Any) -> None:
    global _worker_queue
    _worker_queue = queue


def _run_in_worker(fn: TaskFn, task: Any) -> None:
    fn(task, _worker_queue.put if _worker_queue is not None else None)


def _drain(queue: Any, progress: Progress | None) -> None:
    if queue is None or progress is None:
        return
    while True:
        try:
            progress(queue.get_nowait())
        except Empty:
            return
