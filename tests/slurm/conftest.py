"""A real single-node Slurm for the tests in this directory (started by local_slurm.sh).

Every test here is marked ``slurm``. A test that needs the cluster takes the
``local_slurm`` fixture: it skips, with the script's reason, only where Slurm cannot run
on this machine (not root, no apt-get), and fails instead when ``CI`` is set, since CI
asks for Slurm and a skip there would hide a broken setup.
"""

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "local_slurm.sh"
CANNOT_RUN_HERE = 3  # local_slurm.sh's exit code for "not root / no apt-get"


@dataclass(frozen=True)
class LocalSlurm:
    conf: Path  # /etc/slurm/slurm.conf: read by sbatch/srun/squeue without SLURM_CONF
    state_dir: Path  # state, spool, logs and pid files of the daemons

    def logs(self) -> str:
        """The tail of the daemon logs, to attach to a failing assertion."""
        tails = []
        for log in sorted((self.state_dir / "log").glob("*.log")):
            tails.append(f"--- {log}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-20:]))
        return "\n".join(tails)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.slurm)


@pytest.fixture(scope="session")
def local_slurm() -> LocalSlurm:
    # Slurm is left running at session end on purpose: restarting costs seconds while
    # reuse costs nothing ("start" on a running node returns at once), and other pytest
    # sessions in the same tree may be using the same daemons right now. Stop it by hand
    # with `tests/slurm/local_slurm.sh stop`.
    proc = subprocess.run(
        ["bash", str(SCRIPT), "start"],
        capture_output=True,
        text=True,
        timeout=900,  # a first run installs packages with apt-get
        stdin=subprocess.DEVNULL,
    )
    lines = (proc.stderr.strip() or proc.stdout.strip() or f"exit {proc.returncode}").splitlines()
    reason = f"local Slurm: {lines[-1]}"
    if proc.returncode == CANNOT_RUN_HERE and not os.environ.get("CI"):
        pytest.skip(reason)
    if proc.returncode != 0:
        pytest.fail(f"{reason}\n{proc.stdout}\n{proc.stderr}", pytrace=False)
    state_dir = Path(os.environ.get("LMPIPE_SLURM_DIR", "/tmp/lmpipe-slurm"))
    return LocalSlurm(conf=Path("/etc/slurm/slurm.conf"), state_dir=state_dir)
