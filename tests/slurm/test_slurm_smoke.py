"""Smoke tests against the real local Slurm: sbatch + srun run our console script."""

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

LMPIPE = Path(sys.executable).parent / "lmpipe"  # the venv's console script


def sbatch_wait(tmp_path: Path, body: str, *options: str) -> tuple[subprocess.CompletedProcess, str]:
    """Submit a batch script with `sbatch --wait`; return the finished sbatch and the job log."""
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/bash\nset -euo pipefail\n" + body + "\n")
    log = tmp_path / "job.log"
    proc = subprocess.run(
        [
            "sbatch",
            "--wait",
            "--parsable",
            "--job-name=lmpipe-smoke",
            "--time=2",
            f"--output={log}",
            f"--chdir={tmp_path}",
            *options,
            str(script),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    return proc, log.read_text() if log.exists() else "<no job log>"


def test_srun_runs_lmpipe_help(local_slurm, tmp_path):
    proc, log = sbatch_wait(tmp_path, f"srun {shlex.quote(str(LMPIPE))} --help", "--ntasks=1")
    assert proc.returncode == 0, f"sbatch: {proc.stderr}\njob log:\n{log}\n{local_slurm.logs()}"
    assert "usage: lmpipe" in log


def test_two_tasks_run_on_the_node_cpus(local_slurm, tmp_path):
    if (os.cpu_count() or 1) < 2:
        pytest.skip("the node has one CPU; two tasks cannot be placed")
    body = "srun bash -c 'echo \"task $SLURM_PROCID of $SLURM_NTASKS on $SLURMD_NODENAME\"'"
    proc, log = sbatch_wait(tmp_path, body, "--ntasks=2")
    assert proc.returncode == 0, f"sbatch: {proc.stderr}\njob log:\n{log}\n{local_slurm.logs()}"
    assert "task 0 of 2" in log and "task 1 of 2" in log, log
