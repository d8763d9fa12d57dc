"""What the fault-injection tests share: ``lmpipe`` job commands, and running a job that a test may
kill at any moment (a process group of its own, its output in a file)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.testing import kill_tree

LMPIPE = str(Path(sys.executable).with_name("lmpipe"))
FAILPOINTS = Path(__file__).with_name("failpoints")
"""A ``sitecustomize`` that, with ``LMPIPE_FAULT=...`` set, SIGKILLs a job at a chosen moment."""


def failpoint_env(fault: str) -> dict[str, str]:
    """The environment of a job that kills itself (every process of it) at ``fault``."""
    path = os.pathsep.join(filter(None, [str(FAILPOINTS), os.environ.get("PYTHONPATH", "")]))
    return {"LMPIPE_FAULT": fault, "PYTHONPATH": path}


TINY = [
    "model.seq_len=64",
    "train.global_batch_size=8",
    "train.micro_batch_size=2",
    "train.warmup_steps=2",
    "train.log_interval=1",
    "train.eval_interval=0",
    "data.val_windows=8",
    "tracking.enabled=false",
]
JOB_TIMEOUT_S = 120


def train_command(nproc: int, shards: Path, output: Path, *options: str) -> list[str]:
    """``lmpipe train`` of the tiny shape: one plain process for ``nproc`` 1, else a torchrun job."""
    launch = (
        ["train"] if nproc == 1 else ["launch", "torchrun", "--nproc-per-node", str(nproc), "--", "train"]
    )
    return [LMPIPE, *launch, f"data.shards={shards}", f"output_dir={output}", *TINY, *options]


def step_losses(output: str) -> dict[int, str]:
    """``{step: "loss 1.2345"}`` from the per-step lines rank 0 prints."""
    return {int(m.group(1)): m.group(2) for m in re.finditer(r"train step\s+(\d+)/\d+\s+(loss \S+)", output)}


@dataclass
class Job:
    """A job in its own process group (launcher, torchrun, ranks), its output in ``log``."""

    process: subprocess.Popen[bytes]
    log: Path
    started: float

    @classmethod
    def start(cls, command: list[str], log: Path, **env: str) -> Job:
        with open(log, "wb") as out:  # the child holds its own copy
            process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "OMP_NUM_THREADS": "1", **env},
            )
        return cls(process, log, time.monotonic())

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the whole job at once (launcher, torchrun, every rank), as a lost node would."""
        kill_tree(self.process.pid)
        self.process.wait()

    def wait(self, timeout_s: float = JOB_TIMEOUT_S) -> int:
        """Its exit code; a job still running after ``timeout_s`` is a hang: killed, and the test fails."""
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"job hung for {timeout_s} s:\n{self.output[-3000:]}")

    def wait_for(self, pattern: str, timeout_s: float = JOB_TIMEOUT_S) -> bool:
        """Poll its output until ``pattern`` appears (True) or the job ends (False)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if re.search(pattern, self.output):
                return True
            if self.process.poll() is not None:
                return bool(re.search(pattern, self.output))
            time.sleep(0.02)
        self.kill()
        pytest.fail(f"no {pattern!r} within {timeout_s} s:\n{self.output[-3000:]}")
