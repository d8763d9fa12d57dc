"""How a test rank starts and ends when it is forked from the tests' fork server (``pipeline.testing``'s
``run_distributed_test``, ``pipeline.testing_jobs``)."""

from __future__ import annotations

import atexit
import multiprocessing
import os
import sys
from typing import NoReturn

FORKSERVER_PRELOAD = [
    *("torch", "torch.distributed.checkpoint", "torch.distributed.fsdp", "torch._dynamo", "pandas"),
    *("pipeline.parallel.registry", "pipeline.train.pretrain", "pipeline.cli.main", "deepspeed"),
    *("mlflow.tracking", "mlflow.store.tracking.sqlalchemy_store"),
]
"""What the fork server imports once, so that a rank forked from it starts in ~0.3 s instead of spending
~4-7 CPU-s importing torch, DCP, dynamo (the optimizer's first step imports it), pandas (pyarrow's first
array does), DeepSpeed and MLflow's SQL store. Nothing here initialises CUDA or runs a parallel region
(a forked child must not inherit either); a module that is not installed is skipped by the server."""


Caller = tuple[dict[str, str], str]
"""The environment and working directory a rank takes from the process that started it."""
TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def forkserver_caller() -> Caller:
    """Name the fork server's preload (read when it first starts) and return this process's environment
    and working directory for its ranks: a forked rank would see the server's, from its start."""
    multiprocessing.set_forkserver_preload(FORKSERVER_PRELOAD)
    return dict(os.environ), os.getcwd()


def adopt_caller(caller: Caller, rank: int, world_size: int, port: int, *, torchrun: bool = True) -> None:
    """In a rank: the caller's environment and working directory, with torchrun's variables for
    ``rank`` of ``world_size`` (``torchrun`` False: none, as a plain ``lmpipe`` process has none)."""
    environment, cwd = caller
    os.environ.clear()
    os.environ.update({k: v for k, v in environment.items() if k not in TORCHRUN_VARIABLES})
    if torchrun:
        world = {"RANK": rank, "LOCAL_RANK": rank, "WORLD_SIZE": world_size, "LOCAL_WORLD_SIZE": world_size}
        os.environ.update({name: str(value) for name, value in world.items()})
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    os.chdir(cwd)


def exit_without_finalizing(code: int = 0) -> NoReturn:
    """End a rank whose result is written: Python's exit handlers run, interpreter finalization does not.

    Finalization destroys what the test's libraries left alive (DeepSpeed keeps its process groups and
    engines in module globals and reference cycles) after the interpreter has begun tearing down; one
    time in ~10 under load that aborted a rank whose work was done ("terminate called without an active
    exception", no Python frame on the stack: test_zero_bf16 in CI, 2026-12-07). What a test asserts is
    the function's result, so the rank leaves as soon as that is safe on disk.
    """
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
