"""The one Slurm stack's shared pieces: the task entry point's dispatch by job kind, the task-array
script from the one renderer, and the waiting loop's view of job states."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest

from launch.slurm import task
from launch.slurm.profile import SlurmProfile
from launch.slurm.sbatch import TASK_MODULE, SlurmJob, TaskArray, render_sbatch, render_task_array
from launch.slurm.state import ENDED, JobState, any_active, job_states
from pipeline.core.errors import ConfigError


def sbatch_options(script: str) -> list[str]:
    return [line.removeprefix("#SBATCH ") for line in script.splitlines() if line.startswith("#SBATCH ")]


@pytest.mark.parametrize("stage", sorted(task.KINDS))
def test_every_registered_kind_names_a_function(stage):
    assert callable(task.runner(task.KINDS[stage]))


def test_a_stage_without_a_kind_is_a_usage_error(tmp_path, capsys):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"stage": "bake", "config": {}, "tasks": [{}]}))
    assert task.main([str(plan), "0"]) == 2
    assert "stage 'bake' has no task kind" in capsys.readouterr().err
    assert task.main([str(plan), "first"]) == 2


def test_task_arrays_and_training_jobs_share_the_options_and_the_head():
    profile = SlurmProfile(partition="cpu", setup=["module load x"], sbatch_args=["--comment=it's"])
    array = render_task_array(profile, TaskArray("prep", "/w", "/p/plan.json", 4, max_parallel=2))
    train = render_sbatch(profile, SlurmJob(("train",), "prep", "/w", ("a.yaml",) * 4, max_parallel=2))
    assert sbatch_options(array) == sbatch_options(train)
    assert sbatch_options(array)[-2:] == ["--array=0-3%2", shlex.quote("--comment=it's")]
    assert "module load x" in array.splitlines()
    assert shlex.split(array.splitlines()[-1])[2:4] == ["-m", TASK_MODULE]


def test_sbatch_args_must_be_options(tmp_path):
    path = tmp_path / "profile.yaml"
    path.write_text("sbatch_args: [qos=high]\n")
    with pytest.raises(ConfigError, match="sbatch_args: 'qos=high' is not an sbatch option"):
        SlurmProfile.load(path)


@pytest.fixture
def fake_bin(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    for name in ("scontrol", "sacct"):
        fake(tmp_path, name, 'echo "Invalid job id specified" >&2; exit 1')
    return tmp_path


def fake(bin_dir: Path, name: str, body: str) -> None:
    (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
    (bin_dir / name).chmod(0o755)


def test_squeue_is_asked_last_and_an_empty_queue_means_ended(fake_bin):
    fake(
        fake_bin, "squeue", 'echo "10_1|RUNNING|None|0:05"; echo "10_[2-3%1]|PENDING|JobArrayTaskLimit|0:00"'
    )
    assert job_states("10") == [
        JobState("10_1", "RUNNING", run_time="0:05"),
        JobState("10_[2-3%1]", "PENDING", "JobArrayTaskLimit", run_time="0:00"),
    ]
    assert any_active(["10"]) is True
    fake(fake_bin, "squeue", "exit 0")
    assert job_states("10") == [JobState("10", ENDED)]
    assert any_active(["10", "11"]) is False


def test_jobs_no_source_knows_are_neither_active_nor_ended(fake_bin):
    fake(fake_bin, "squeue", 'echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1')
    assert any_active(["10"]) is None


def test_a_cancelled_job_has_ended():
    assert not JobState("10", "CANCELLED by 0").active and JobState("10", "REQUEUED").active
