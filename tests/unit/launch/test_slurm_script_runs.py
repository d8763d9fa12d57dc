"""Run the rendered sbatch script under bash with stand-in ``srun``/``scontrol``/``scancel``/``torchrun``
on PATH: the arguments torchrun receives, the requeue after exit 75, and the USR2 -> SIGTERM ->
checkpoint -> requeue path, without a Slurm cluster. (The real cluster: tests/slurm/.)"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from launch.slurm.profile import SlurmProfile
from launch.slurm.sbatch import SlurmJob, render_sbatch

FAKES = {
    # srun: note the call, drop srun's own options, run the task in its place (so $! is the task).
    "srun": '''echo "srun $*" >> "$FAKE_DIR/calls"
while [[ $1 == --* ]]; do shift; done
exec "$@"''',
    "scontrol": """echo "scontrol $*" >> "$FAKE_DIR/calls"
if [[ $1 == show ]]; then printf 'node1\\nnode2\\n'; fi""",
    "scancel": '''echo "scancel $*" >> "$FAKE_DIR/calls"
kill -TERM "$(cat "$FAKE_DIR/torchrun.pid")"''',
    "deepspeed": '''printf '%s\\0' "$@" > "$FAKE_DIR/argv"''',
    # torchrun: record argv (NUL-separated) and environment; exit as told, or wait for SIGTERM and
    # exit 75 as the trainers do after their checkpoint.
    "torchrun": '''printf '%s\\0' "$@" > "$FAKE_DIR/argv"
env > "$FAKE_DIR/env"
echo $$ > "$FAKE_DIR/torchrun.pid"
if [[ -n ${FAKE_WAIT_FOR_TERM:-} ]]; then
  trap 'exit 75' TERM
  while true; do sleep 0.02; done
fi
exit "${FAKE_EXIT:-0}"''',
}
JOB = SlurmJob(
    ("train", "--config", "my configs/run 1.yaml", 'tracking.run_name=it\'s $HOME "x"', "y=`id`"),
    job_name="t",
    workdir="/w",
)


@pytest.fixture
def fake_slurm(tmp_path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in FAKES.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return tmp_path


def start(fake: Path, script: str, **env: str) -> subprocess.Popen:
    path = fake / "job.sbatch"
    path.write_text(script)
    job_env = {
        "PATH": f"{fake / 'bin'}:{os.environ['PATH']}",
        "FAKE_DIR": str(fake),
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NODELIST": "node[1-2]",
        "SLURM_NNODES": "2",
        "NCCL_SOCKET_IFNAME": "eth9",
        **env,
    }
    return subprocess.Popen(
        ["bash", str(path)],
        cwd=fake,
        env=job_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def run(fake: Path, script: str, **env: str) -> tuple[int, str]:
    process = start(fake, script, **env)
    output, _ = process.communicate(timeout=30)
    return process.returncode, output


def calls(fake: Path) -> list[str]:
    path = fake / "calls"
    return path.read_text().splitlines() if path.exists() else []


def torchrun_argv(fake: Path) -> list[str]:
    return (fake / "argv").read_text().split("\0")[:-1]


def test_torchrun_gets_the_rendezvous_and_the_verb_arguments_unchanged(fake_slurm):
    profile = SlurmProfile(gpus_per_node=4, cpus_per_task=32, env={"NCCL_SOCKET_IFNAME": ""})
    code, output = run(fake_slurm, render_sbatch(profile, JOB))
    assert code == 0, output
    assert torchrun_argv(fake_slurm) == [
        "--nnodes=2",
        "--nproc_per_node=4",
        "--rdzv_backend=c10d",
        "--rdzv_endpoint=node1:24242",
        "--rdzv_id=4242",
        "-m",
        "pipeline.cli",
        *JOB.verb_args,
    ]
    env = dict(line.split("=", 1) for line in (fake_slurm / "env").read_text().splitlines() if "=" in line)
    assert env["OMP_NUM_THREADS"] == "8" and env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1"
    assert "NCCL_SOCKET_IFNAME" not in env  # an empty value in the profile unsets it
    assert [c for c in calls(fake_slurm) if "requeue" in c] == []
    (srun,) = [c for c in calls(fake_slurm) if c.startswith("srun ")]
    assert "--cpus-per-task=32" in srun.split()  # a step no longer inherits the allocation's (Slurm >= 22.05)


@pytest.mark.parametrize("restarts, requeued, exit_code", [("0", True, 0), ("2", True, 0), ("3", False, 75)])
def test_exit_75_requeues_until_max_requeues(fake_slurm, restarts, requeued, exit_code):
    code, output = run(
        fake_slurm,
        render_sbatch(SlurmProfile(max_requeues=3), JOB),
        FAKE_EXIT="75",
        SLURM_RESTART_COUNT=restarts,
    )
    assert code == exit_code, output
    assert ("scontrol requeue 4242" in calls(fake_slurm)) == requeued


def test_a_failed_run_is_not_requeued(fake_slurm):
    code, output = run(fake_slurm, render_sbatch(SlurmProfile(), JOB), FAKE_EXIT="3")
    assert code == 3 and "scontrol requeue 4242" not in calls(fake_slurm)


def test_usr2_reaches_the_ranks_as_sigterm_then_the_job_is_requeued(fake_slurm):
    process = start(fake_slurm, render_sbatch(SlurmProfile(), JOB), FAKE_WAIT_FOR_TERM="1")
    deadline = time.monotonic() + 20
    while not (fake_slurm / "torchrun.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)  # let bash reach `wait`
    process.send_signal(signal.SIGUSR2)  # what --signal=B:USR2@<s> does
    output, _ = process.communicate(timeout=20)
    assert process.returncode == 0, output
    assert calls(fake_slurm)[-2:] == ["scancel --signal=TERM 4242", "scontrol requeue 4242"]
    assert "lmpipe: requeueing job 4242" in output


def test_array_element_runs_its_own_config(fake_slurm):
    job = SlurmJob(
        ("train", "data.shards=/s"), job_name="t", workdir="/w", array_configs=("a.yaml", "b c.yaml")
    )
    code, output = run(fake_slurm, render_sbatch(SlurmProfile(), job), SLURM_ARRAY_TASK_ID="1")
    assert code == 0, output
    assert torchrun_argv(fake_slurm)[-4:] == ["train", "--config", "b c.yaml", "data.shards=/s"]


def test_deepspeed_variant_runs_the_launcher_per_node_with_a_hostfile_of_the_allocation(fake_slurm):
    (fake_slurm / "logs").mkdir()  # `lmpipe launch slurm` creates log_dir before it submits
    job = SlurmJob(JOB.verb_args, job_name="t", workdir="/w", launcher="deepspeed")
    code, output = run(fake_slurm, render_sbatch(SlurmProfile(gpus_per_node=8), job), SLURM_NODEID="1")
    assert code == 0, output
    assert torchrun_argv(fake_slurm) == [
        "--node_rank=1",
        "--hostfile=logs/hostfile-4242",
        "--no_ssh",
        "--master_addr=node1",
        "--master_port=24242",
        "--no_local_rank",
        "--module",
        "pipeline.cli",
        *JOB.verb_args,
    ]
    assert (fake_slurm / "logs" / "hostfile-4242").read_text() == "node1 slots=8\nnode2 slots=8\n"
