"""Build and run ``torchrun`` command lines for any lmpipe verb, on one node or several.

Three ways to meet, picked from what the user gives:

- one node, no endpoint: ``--standalone`` (torchrun picks a free port on this host, so two jobs
  on one machine never collide);
- several nodes (or an endpoint): c10d rendezvous at ``HOST:PORT``; nodes join in any order and
  get their node rank from the rendezvous, so the same command runs on every node;
- an endpoint and ``--node-rank``: static rendezvous (``--master_addr/--master_port``), for
  schedulers that hand each node its rank.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from launch.hosts import split_endpoint
from launch.process import run_streaming
from pipeline.core.errors import InputError


def torchrun_command(
    verb_args: Sequence[str],
    *,
    nproc_per_node: int,
    nnodes: int = 1,
    node_rank: int | None = None,
    rdzv_endpoint: str = "",
    rdzv_id: str = "lmpipe",
) -> list[str]:
    """``python -m torch.distributed.run <rendezvous> --nproc_per_node N -m pipeline.cli <verb_args>``.

    Runs through the current interpreter so the venv that launched us is the one that trains.
    """
    if nproc_per_node < 1:
        raise InputError(f"--nproc-per-node must be >= 1, got {nproc_per_node}")
    if nnodes < 1:
        raise InputError(f"--nnodes must be >= 1, got {nnodes}")
    if nnodes > 1 and not rdzv_endpoint:
        raise InputError("--nnodes > 1 needs --rdzv-endpoint HOST:PORT (a host every node can reach)")
    if node_rank is not None and not (rdzv_endpoint and 0 <= node_rank < nnodes):
        raise InputError(f"--node-rank needs --rdzv-endpoint and must be in [0, {nnodes}), got {node_rank}")
    if not rdzv_endpoint:
        rendezvous = ["--standalone"]
    elif node_rank is None:
        split_endpoint(rdzv_endpoint)  # validate before any node waits on it
        rendezvous = [
            f"--nnodes={nnodes}",
            "--rdzv_backend=c10d",
            f"--rdzv_endpoint={rdzv_endpoint}",
            f"--rdzv_id={rdzv_id}",
        ]
    else:
        host, port = split_endpoint(rdzv_endpoint)
        rendezvous = [
            f"--nnodes={nnodes}",
            f"--node_rank={node_rank}",
            f"--master_addr={host}",
            f"--master_port={port}",
        ]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        *rendezvous,
        f"--nproc_per_node={nproc_per_node}",
        "-m",
        "pipeline.cli",
        *verb_args,
    ]


def run_torchrun(
    verb_args: Sequence[str],
    *,
    nproc_per_node: int,
    nnodes: int = 1,
    node_rank: int | None = None,
    rdzv_endpoint: str = "",
    rdzv_id: str = "lmpipe",
    on_line: Callable[[str], None] | None = None,
    env: dict[str, str] | None = None,
) -> int:
    """Run the command, handing each output line to ``on_line`` (default: echo); returns the exit code."""
    command = torchrun_command(
        verb_args,
        nproc_per_node=nproc_per_node,
        nnodes=nnodes,
        node_rank=node_rank,
        rdzv_endpoint=rdzv_endpoint,
        rdzv_id=rdzv_id,
    )
    return run_streaming(command, ranks_on_this_node=nproc_per_node, on_line=on_line, env=env)
