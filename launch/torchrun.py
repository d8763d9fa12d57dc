"""Build and run ``torchrun`` command lines for any lmpipe verb.

Single node for now: ``--standalone`` picks a free rendezvous port on this host, so
two jobs on one machine never collide. Multi-node rendezvous arrives with the launch issue.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence


def torchrun_command(verb_args: Sequence[str], *, nproc_per_node: int) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc_per_node N -m pipeline.cli <verb_args>``.

    Runs through the current interpreter so the venv that launched us is the one that trains.
    """
    if nproc_per_node < 1:
        raise ValueError(f"--nproc-per-node must be >= 1, got {nproc_per_node}")
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={nproc_per_node}", "-m", "pipeline.cli", *verb_args,
    ]


def run_torchrun(
    verb_args: Sequence[str],
    *,
    nproc_per_node: int,
    on_line: Callable[[str], None] | None = None,
    env: dict[str, str] | None = None,
) -> int:
    """Run the command, handing each output line to ``on_line`` (default: echo); returns the exit code."""
    command = torchrun_command(verb_args, nproc_per_node=nproc_per_node)
    child_env = {**os.environ, **(env or {})}
    # torchrun would default every rank to 1 thread anyway; say so explicitly to silence its warning.
    child_env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc_per_node)))
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=child_env, bufsize=1) as process:
        assert process.stdout is not None
        for line in process.stdout:
            (on_line or (lambda text: print(text, end="")))(line)
    return process.returncode
