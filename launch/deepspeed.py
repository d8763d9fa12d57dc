"""Build and run DeepSpeed launcher command lines for any lmpipe verb.

``python -m deepspeed.launcher.runner ... --no_local_rank --module pipeline.cli <verb args>``:
each rank gets the torchrun-style environment (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT)
that ``pipeline.distributed`` reads, so any strategy trains under it, not only ZeRO. Two flags
are always set: ``--no_local_rank`` (our verbs take no ``--local_rank`` argument) and
``--module``. Several nodes come from a hostfile (``host slots=G`` lines,
``hosts.render_hostfile``); the runner then reaches them over pdsh/ssh.

On CPU (``DS_ACCELERATOR=cpu``) the runner sees one "device" per NUMA node, so the ranks
per node must be given with ``--num-gpus``; it then runs them as it would on GPUs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from launch.hosts import check_hostname
from launch.process import run_streaming
from pipeline.core.errors import InputError, MissingInputError


@dataclass(frozen=True)
class DeepSpeedLaunch:
    """The runner's resource flags; unset ones are left to the runner's defaults."""

    hostfile: str = ""
    """MPI-style hostfile; empty: this node only."""
    num_nodes: int = 0
    """Use the first N hosts of the hostfile; 0: all."""
    num_gpus: int = 0
    """Ranks (GPUs) per node; 0: every device the runner detects."""
    include: str = ""
    """``host1@host2:0,2``: only these hosts / slots (not with num_nodes/num_gpus)."""
    exclude: str = ""
    master_addr: str = ""
    """Address of the first node; empty: 127.0.0.1 on one node, else the runner asks the host over ssh."""
    master_port: int = 29500

    def check(self) -> None:
        if self.hostfile and not Path(self.hostfile).is_file():
            raise MissingInputError(f"hostfile not found: {self.hostfile}")
        if (self.include or self.exclude) and (self.num_nodes or self.num_gpus):
            raise InputError("--include/--exclude cannot be combined with --num-nodes/--num-gpus")
        if self.include and self.exclude:
            raise InputError("give --include or --exclude, not both")
        if self.num_nodes < 0 or self.num_gpus < 0:
            raise InputError("--num-nodes and --num-gpus must be >= 0")
        if self.num_nodes > 1 and not self.hostfile:
            raise InputError("--num-nodes > 1 needs --hostfile (lines 'host slots=G')")
        if self.master_addr:
            check_hostname(self.master_addr)
        if not 0 < self.master_port < 65536:
            raise InputError(f"--master-port must be in 1..65535, got {self.master_port}")


def deepspeed_command(verb_args: Sequence[str], launch: DeepSpeedLaunch) -> list[str]:
    """The runner's command line; the current interpreter runs it, so the venv that launched us trains."""
    launch.check()
    flags = [f"--master_port={launch.master_port}"]
    for flag, value in (
        ("--hostfile", launch.hostfile),
        ("--include", launch.include),
        ("--exclude", launch.exclude),
        ("--master_addr", launch.master_addr),
    ):
        if value:
            flags.append(f"{flag}={value}")
    for flag, number in (("--num_nodes", launch.num_nodes), ("--num_gpus", launch.num_gpus)):
        if number:
            flags.append(f"{flag}={number}")
    return [
        sys.executable,
        "-m",
        "deepspeed.launcher.runner",
        *flags,
        "--no_local_rank",
        "--module",
        "pipeline.cli",
        *verb_args,
    ]


def run_deepspeed(
    verb_args: Sequence[str],
    launch: DeepSpeedLaunch,
    *,
    on_line: Callable[[str], None] | None = None,
    env: dict[str, str] | None = None,
) -> int:
    """Run the command, handing each output line to ``on_line`` (default: echo); returns the exit code."""
    return run_streaming(
        deepspeed_command(verb_args, launch),
        ranks_on_this_node=max(1, launch.num_gpus),
        on_line=on_line,
        env=env,
    )
