"""Run a launcher's command line and stream its output, for every local launcher alike."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Sequence


def run_streaming(
    command: Sequence[str],
    *,
    ranks_on_this_node: int,
    on_line: Callable[[str], None] | None = None,
    env: dict[str, str] | None = None,
) -> int:
    """Run ``command``, handing each output line to ``on_line`` (default: echo); returns the exit code.

    ``OMP_NUM_THREADS`` defaults to this node's cores shared among its ranks: torchrun would pick 1
    (and warn about it), DeepSpeed's launcher would leave every rank all the cores.
    """
    child_env = {**os.environ, **(env or {})}
    child_env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // ranks_on_this_node)))
    with subprocess.Popen(
        list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=child_env, bufsize=1
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            (on_line or (lambda text: print(text, end="", flush=True)))(line)
    return process.returncode
