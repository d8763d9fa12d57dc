"""The sbatch script as users read it: golden files for the shipped GPU profile, quoting, and the
errors a bad profile gets. (What the script does when it runs: test_slurm_script_runs.py.)"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from launch.slurm.profile import SlurmProfile
from launch.slurm.sbatch import SlurmJob, render_sbatch
from pipeline.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]
GOLDEN = Path(__file__).parent / "golden"
GPU_8X = REPO / "configs" / "slurm" / "gpu-8x.yaml"
TRAIN = SlurmJob(
    ("train", "--config", "configs/train/1.3b.yaml", "data.shards=/shared/shards"),
    job_name="lmpipe-train",
    workdir="/shared/lmpipe",
)


def bash_syntax_ok(script: str) -> None:
    proc = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("nodes, golden", [(1, "gpu-8x-1node.sbatch"), (4, "gpu-8x-4nodes.sbatch")])
def test_rendered_script_matches_golden(nodes, golden):
    profile = SlurmProfile.load(GPU_8X, ["partition=gpu"], values={"nodes": nodes})
    script = render_sbatch(profile, TRAIN)
    if os.environ.get("LMPIPE_UPDATE_GOLDEN"):
        (GOLDEN / golden).write_text(script)
    assert script == (GOLDEN / golden).read_text()
    bash_syntax_ok(script)


def test_golden_scripts_have_the_launch_contract():
    script = (GOLDEN / "gpu-8x-4nodes.sbatch").read_text()
    for line in (
        "#SBATCH --nodes=4",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --gpus-per-node=8",
        "#SBATCH --signal=B:USR2@600",
        "#SBATCH --open-mode=append",
        "#SBATCH --output=logs/%x-%j.out",
        "#SBATCH --requeue",
        "set -euo pipefail",
        "export OMP_NUM_THREADS=12",
        "export TORCH_NCCL_ASYNC_ERROR_HANDLING=1",
        "rdzv_port=$((20000 + SLURM_JOB_ID % 20000))",
        # The step's tasks get the allocation's cores: recent Slurm no longer passes them to srun.
        "srun --kill-on-bad-exit=1 --ntasks-per-node=1 --cpus-per-task=96 \\",
        '--nnodes="$SLURM_NNODES" \\',
        "--nproc_per_node=8 \\",
        "--rdzv_backend=c10d \\",
        '--rdzv_endpoint="$head_node:$rdzv_port" \\',
        '--rdzv_id="$SLURM_JOB_ID" \\',
        'scontrol requeue "$SLURM_JOB_ID"',
        "trap on_preempt USR2",
    ):
        assert line in script.splitlines() or f"    {line}" in script.splitlines(), line
    assert "NCCL_SOCKET_IFNAME" not in script  # NCCL picks the interface unless the profile says otherwise


def test_odd_values_are_shell_quoted():
    profile = SlurmProfile(
        partition="gpu big",
        account="o'brien",
        log_dir="my logs",
        setup=[],
        env={"LMPIPE_NOTE": 'cost: $5 "now"'},
    )
    job = SlurmJob(
        ("train", "--config", "a b.yaml", "tracking.run_name=it's $HOME"),
        job_name="my job",
        workdir="/runs/$USER/x y",
    )
    script = render_sbatch(profile, job)
    for expected in (
        "#SBATCH --partition='gpu big'",
        "#SBATCH --account='o'\"'\"'brien'",
        "#SBATCH --job-name='my job'",
        "#SBATCH --chdir='/runs/$USER/x y'",
        "#SBATCH --output='my logs/%x-%j.out'",
        "export LMPIPE_NOTE='cost: $5 \"now\"'",
        "train --config 'a b.yaml' 'tracking.run_name=it'\"'\"'s $HOME' &",
    ):
        assert expected in script, expected
    bash_syntax_ok(script)


def test_container_deepspeed_and_array_variants_are_valid_bash():
    for runtime in ("pyxis", "apptainer"):
        profile = SlurmProfile.load(
            GPU_8X,
            [
                "partition=gpu",
                f"container.runtime={runtime}",
                "container.image=/images/lm pipe.sif",
                "container.mounts=[/a:/a]",
            ],
        )
        script = render_sbatch(profile, TRAIN)
        assert "'/images/lm pipe.sif'" in script
        bash_syntax_ok(script)
    deepspeed = SlurmJob(TRAIN.verb_args, job_name="ds", workdir="/w", launcher="deepspeed")
    bash_syntax_ok(render_sbatch(SlurmProfile(log_dir="my logs"), deepspeed))
    array = SlurmJob(
        ("train", "data.shards=/s"),
        job_name="sweep",
        workdir="/w",
        array_configs=("a.yaml", "b c.yaml"),
        max_parallel=1,
    )
    script = render_sbatch(SlurmProfile(), array)
    assert "#SBATCH --array=0-1%1" in script and "#SBATCH --output=logs/%x-%A_%a.out" in script
    assert 'train --config "$config" data.shards=/s &' in script
    bash_syntax_ok(script)


def test_no_requeue_profile_says_so():
    script = render_sbatch(SlurmProfile(max_requeues=0, signal_seconds=0), TRAIN)
    assert (
        "#SBATCH --no-requeue" in script and "--signal=B:" not in script and "scontrol requeue" not in script
    )
    bash_syntax_ok(script)


def load_error(tmp_path: Path, yaml: str, overrides: list[str] | None = None) -> str:
    path = tmp_path / "profile.yaml"
    path.write_text(yaml)
    with pytest.raises(ConfigError) as info:
        SlurmProfile.load(path, overrides or [])
    message = str(info.value)
    assert "\n" not in message
    return message


def test_unknown_profile_key_is_one_line_naming_it(tmp_path):
    message = load_error(tmp_path, "partition: gpu\ngpus_per_nod: 8\n")
    assert "unknown key 'gpus_per_nod'" in message and "gpus_per_node" in message


def test_required_partition_missing_says_how_to_give_it():
    with pytest.raises(
        ConfigError, match=r"partition: this profile requires it; give it with --set partition="
    ):
        SlurmProfile.load(GPU_8X)


@pytest.mark.parametrize(
    "yaml, key",
    [
        ("nodelist: 'gpu[01-04];reboot'\n", "nodelist"),
        ("nodelist: 'gpu 01'\n", "nodelist"),
        ('partition: "gpu\\nrm"\n', "partition"),
        ("time: 'one day'\n", "time"),
        ("env: {'BAD NAME': x}\n", "env"),
        ("gpus_per_node: 8\nprocs_per_node: 4\n", "procs_per_node"),
        ("container: {image: x, runtime: docker}\n", "container.runtime"),
    ],
)
def test_unrenderable_values_are_rejected(tmp_path, yaml, key):
    assert f"config error: {key}:" in load_error(tmp_path, yaml)


def test_several_tasks_per_node_are_rendezvous_nodes_of_their_own():
    profile = SlurmProfile(tasks_per_node=2, procs_per_node=1, cpus_per_task=1)
    script = render_sbatch(profile, TRAIN)
    lines = script.splitlines()
    for line in (
        "#SBATCH --ntasks-per-node=2",
        "srun --kill-on-bad-exit=1 --ntasks-per-node=2 --cpus-per-task=1 \\",
        '    --nnodes="$SLURM_NTASKS" \\',
        "    --nproc_per_node=1 \\",
        "export OMP_NUM_THREADS=1",
    ):
        assert line in lines, line
    assert profile.world_size == 2
    bash_syntax_ok(script)
    with pytest.raises(ValueError, match="tasks_per_node"):
        render_sbatch(profile, SlurmJob(TRAIN.verb_args, job_name="ds", workdir="/w", launcher="deepspeed"))


def test_srun_gets_cpus_per_task_only_when_the_profile_sets_it():
    def srun_line(profile: SlurmProfile) -> str:
        (line,) = [line for line in render_sbatch(profile, TRAIN).splitlines() if line.startswith("srun ")]
        return line

    assert "--cpus-per-task=" not in srun_line(SlurmProfile())  # the partition's default, as sbatch's
    assert "--cpus-per-task=16" in srun_line(SlurmProfile(cpus_per_task=16)).split()


@pytest.mark.parametrize("yaml", ["tasks_per_node: 0\n", "tasks_per_node: 2\ngpus_per_node: 8\n"])
def test_tasks_per_node_is_checked(tmp_path, yaml):
    assert "config error: tasks_per_node:" in load_error(tmp_path, yaml)
