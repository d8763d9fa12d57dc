"""Run tasks here: one after another, or (``workers > 1``) in one pool of worker processes.

Starting a worker is the costly part of a small task: a fresh interpreter imports numpy,
pyarrow and the task's modules (~0.4 CPU seconds), which is more than a small input file
takes to prep. So one pool serves every stage of a run, and its workers are forked from a
forkserver that imported the task function's module once: each worker starts ready. (Forking
the caller itself would be unsafe beside the progress bar's thread; the forkserver is a fresh
single-threaded process.) It also imports what the caller's script imported (``_preload``).

Each worker gets its share of the cores for the native thread pools a task may start
(tokenizers' Rust pool, Arrow's and OpenMP's), set before any task runs: N workers that each
start one thread per core fight over the cores and spend CPU on it instead of on the work.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from functools import partial
from queue import Empty
from types import ModuleType
from typing import Any

from data_prep.executor import Progress, Stage, TaskFn

THREAD_POOL_SIZES = ("RAYON_NUM_THREADS", "OMP_NUM_THREADS")
"""Read by tokenizers (Rust) and by Arrow/OpenMP when their pools first start in a process."""


def worker_env(workers: int, cores: int | None = None) -> dict[str, str]:
    """The environment a pool worker sets for itself: its share of the cores for every native
    thread pool, and tokenizers' parallelism off when that share is one thread."""
    threads = max(1, (cores or os.cpu_count() or 1) // workers)
    env = dict.fromkeys(THREAD_POOL_SIZES, str(threads))
    env["TOKENIZERS_PARALLELISM"] = "true" if threads > 1 else "false"
    return env


class LocalExecutor:
    def __init__(self, workers: int = 1) -> None:
        self.workers = workers

    def run_stages(self, stages: Sequence[Stage], progress: Progress | None = None) -> None:
        """Each stage's tasks, stage after stage: a stage starts when the one before has finished.
        Every stage with several tasks runs in the same pool."""
        pooled = [stage for stage in stages if len(stage.tasks) > 1]
        if self.workers <= 1 or not pooled:
            for stage in stages:
                assert stage.fn is not None, f"stage {stage.name} has no function to run"
                _run_here(stage.tasks, stage.fn, progress)
            return
        size = min(self.workers, max(len(stage.tasks) for stage in pooled))
        assert pooled[0].fn is not None, f"stage {pooled[0].name} has no function to run"
        with _pool(size, pooled[0].fn, progress is not None) as (pool, queue):
            for stage in stages:
                assert stage.fn is not None, f"stage {stage.name} has no function to run"
                if len(stage.tasks) > 1:
                    _run_in_pool(pool, queue, stage.tasks, stage.fn, progress)
                else:
                    _run_here(stage.tasks, stage.fn, progress)
        _drain(queue, progress)  # what the workers sent just before they exited

    def run(self, tasks: Sequence[Any], fn: TaskFn, progress: Progress | None = None) -> None:
        """Call ``fn(task, progress)`` for every task; the first failure is re-raised after the others finish.

        ``fn`` and the tasks must be picklable when ``workers > 1`` (a module-level function or a
        ``functools.partial`` of one)."""
        self.run_stages([Stage("run", list(tasks), fn)], progress)


def _run_here(tasks: Sequence[Any], fn: TaskFn, progress: Progress | None) -> None:
    for task in tasks:
        fn(task, progress)


@contextmanager
def _pool(workers: int, fn: TaskFn, report: bool) -> Iterator[tuple[Executor, Any]]:
    """A pool of ``workers`` forked from a forkserver that preloads ``fn``'s module, and the queue
    their progress comes back through (None when nobody listens)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_preload(fn))  # only read when the forkserver first starts
    queue = context.Queue() if report else None
    initializer = partial(_init_worker, worker_env(workers))
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=initializer, initargs=(queue,)
    ) as pool:
        yield pool, queue


def _run_in_pool(
    pool: Executor, queue: Any, tasks: Sequence[Any], fn: TaskFn, progress: Progress | None
) -> None:
    """The tasks in the pool; their progress comes back through ``queue``, drained while waiting (a
    worker's last report may arrive after its task's result: the caller drains again at the end)."""
    futures: list[Future[None]] = [pool.submit(_run_in_worker, fn, task) for task in tasks]
    running = set(futures)
    while running:
        _, running = wait(running, timeout=0.2, return_when=FIRST_COMPLETED)
        _drain(queue, progress)
    _drain(queue, progress)
    for future in futures:
        future.result()  # re-raise the first failure, after the other tasks have finished


def _preload(fn: TaskFn) -> list[str]:
    """The modules the forkserver imports once for all workers: the task function's, and those the
    caller's script imported. Each worker runs that script's imports again (multiprocessing does, for
    functions defined there; Python 3.11's forkserver ignores "__main__" in its preload list): with
    them loaded already, that costs nothing, where a bench script's imports cost a worker 0.4 s."""
    main = sys.modules.get("__main__")
    values = list(vars(main).values()) if main is not None else []
    names = {
        value.__name__ if isinstance(value, ModuleType) else getattr(value, "__module__", None)
        for value in values
    }
    names.add(getattr(fn, "func", fn).__module__)
    return sorted(name for name in names if isinstance(name, str) and name not in ("__main__", "builtins"))


_worker_queue: Any = None


def _init_worker(env: dict[str, str], queue: Any) -> None:
    global _worker_queue
    os.environ.update(env)
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
