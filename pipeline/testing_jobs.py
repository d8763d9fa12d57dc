"""``lmpipe`` jobs for the tests, each rank forked from the tests' fork server (``pipeline.testing``).

A rank here runs what torchrun would run in it: ``lmpipe <argv>`` (``pipeline.cli.main``) with RANK,
WORLD_SIZE, MASTER_ADDR/PORT, ... set, its output appended to one log as torchrun's would be. What it
skips is each rank's interpreter and imports and torchrun's own process: ~15 CPU-s of a 2-rank job on
the 2-core CI machine, where the job's training takes a few. For tests whose subject is a checkpoint, a
resume or the numbers; the launchers, Slurm and the kill tests run ``lmpipe launch torchrun`` itself.
A job of one process gets no torchrun variables, as a plain ``lmpipe train`` has none.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.multiprocessing as mp

from pipeline.cli.main import main
from pipeline.testing import free_port
from pipeline.testing_ranks import Caller, adopt_caller, exit_without_finalizing, forkserver_caller

GRACE_S = 10.0
"""How long the other ranks may run on after one failed, before they are terminated."""


@dataclass
class ForkedJob:
    """A started job: its ranks and the log they append to."""

    context: mp.ProcessContext
    log: Path

    def wait(self, timeout_s: float = 300.0) -> int:
        """0 once every rank exited 0; else the first failing rank's exit code (its traceback is in the
        log), the other ranks ended after a grace period (rank 0 may still be printing the error that
        another rank, exiting first, met too). Raises TimeoutError after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        try:
            # False: one rank ended and others run on.
            while not self.context.join(max(0.0, deadline - time.monotonic()), grace_period=GRACE_S):
                if time.monotonic() >= deadline:
                    self.kill()
                    raise TimeoutError(f"job of {self.log} still running after {timeout_s} s")
        except mp.ProcessExitedException as exc:
            return exc.exit_code or 1
        except mp.ProcessRaisedException as exc:  # a bug, not a user error: keep its traceback
            with open(self.log, "a") as log:
                log.write(f"\n{exc}\n")
            return 1
        return 0

    def kill(self) -> None:
        for process in self.context.processes:
            if process.is_alive():
                process.kill()
        for process in self.context.processes:
            process.join()


def start_job(argv: Sequence[str], nproc: int, log: Path, env: dict[str, str] | None = None) -> ForkedJob:
    """Start ``lmpipe <argv>`` on ``nproc`` forked ranks, their stdout and stderr appended to ``log``;
    ``env`` over the caller's environment."""
    log.parent.mkdir(parents=True, exist_ok=True)
    log.touch()
    environment, cwd = forkserver_caller()
    context = mp.start_processes(
        _rank,
        args=(list(argv), nproc, free_port(), str(log), ({**environment, **(env or {})}, cwd)),
        nprocs=nproc,
        start_method="forkserver",
        join=False,
    )
    assert context is not None  # join=False returns the context
    return ForkedJob(context, log)


def run_job(argv: Sequence[str], nproc: int, log: Path, env: dict[str, str] | None = None) -> str:
    """Run ``lmpipe <argv>`` on ``nproc`` forked ranks to its end; its output. Fails on a nonzero exit."""
    code = start_job(argv, nproc, log, env).wait()
    output = log.read_text()
    assert code == 0, f"exit {code}\n{output[-6000:]}"
    return output


def _rank(rank: int, argv: list[str], nproc: int, port: int, log: str, caller: Caller) -> None:
    adopt_caller(caller, rank, nproc, port, torchrun=nproc > 1)
    if os.environ.get("OMP_NUM_THREADS"):  # torch read it when the server imported it
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    out = os.open(log, os.O_WRONLY | os.O_APPEND)
    os.dup2(out, 1)
    os.dup2(out, 2)
    sys.argv = ["lmpipe", *argv]
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    exit_without_finalizing(code)
