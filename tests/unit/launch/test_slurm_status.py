"""``lmpipe launch status``: job states from ``scontrol show job`` (and ``sacct`` for old jobs), one line
per array element, with stand-in Slurm commands on PATH."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from launch.slurm.state import JobState, job_states, parse_sacct, parse_scontrol
from pipeline.cli.main import main

ARRAY = (
    "JobId=12 ArrayJobId=10 ArrayTaskId=2 JobName=sweep JobState=PENDING Reason=BeginTime Requeue=1 "
    "Restarts=1 ExitCode=0:0 RunTime=00:00:00\n"
    "JobId=11 ArrayJobId=10 ArrayTaskId=1 JobName=sweep JobState=RUNNING Reason=None Restarts=0 ExitCode=0:0 "
    "RunTime=00:01:02\n"
    "JobId=10 ArrayJobId=10 ArrayTaskId=3-5%2 JobName=sweep JobState=PENDING Reason=JobArrayTaskLimit "
    "Restarts=0 ExitCode=0:0 RunTime=00:00:00\n"
    "JobId=13 ArrayJobId=10 ArrayTaskId=0 JobName=sweep JobState=FAILED Reason=NonZeroExitCode Restarts=0 "
    "ExitCode=1:0 RunTime=00:00:09\n"
)


def test_scontrol_records_become_one_state_per_element_in_index_order():
    assert parse_scontrol(ARRAY) == [
        JobState("10_0", "FAILED", "NonZeroExitCode", "1:0", "0", "00:00:09"),
        JobState("10_1", "RUNNING", "", "0:0", "0", "00:01:02"),
        JobState("10_2", "PENDING", "BeginTime", "0:0", "1", "00:00:00"),
        JobState("10_[3-5%2]", "PENDING", "JobArrayTaskLimit", "0:0", "0", "00:00:00"),
    ]
    single = (
        "JobId=7 JobName=t JobState=COMPLETED Reason=None Restarts=1 ExitCode=0:0 RunTime=00:00:24 "
        "ArrayJobId=N/A"
    )
    assert parse_scontrol(single) == [JobState("7", "COMPLETED", "", "0:0", "1", "00:00:24")]


def test_sacct_lines_parse():
    assert parse_sacct("10_1|COMPLETED|0:0|00:00:03\n10_0|FAILED|1:0|00:00:09\n") == [
        JobState("10_0", "FAILED", exit_code="1:0", run_time="00:00:09"),
        JobState("10_1", "COMPLETED", exit_code="0:0", run_time="00:00:03"),
    ]


@pytest.fixture
def fake_bin(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    return tmp_path


def fake(bin_dir: Path, name: str, body: str) -> None:
    (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
    (bin_dir / name).chmod(0o755)


def test_status_prints_a_table_of_the_elements(fake_bin, capsys):
    (fake_bin / "records").write_text(ARRAY)
    fake(fake_bin, "scontrol", f'[[ "$*" == "show job --oneliner 10" ]] && cat {fake_bin / "records"}')
    assert main(["launch", "status", "10"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["JOB", "STATE", "REASON", "EXIT", "RESTARTS", "TIME"]
    assert [line.split()[:3] for line in lines[1:]] == [
        ["10_0", "FAILED", "NonZeroExitCode"],
        ["10_1", "RUNNING", "-"],
        ["10_2", "PENDING", "BeginTime"],
        ["10_[3-5%2]", "PENDING", "JobArrayTaskLimit"],
    ]


def test_a_job_slurmctld_forgot_is_looked_up_in_sacct(fake_bin):
    fake(fake_bin, "scontrol", 'echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1')
    fake(fake_bin, "sacct", 'echo "10|COMPLETED|0:0|00:00:03"')
    assert job_states("10") == [JobState("10", "COMPLETED", exit_code="0:0", run_time="00:00:03")]


def test_unknown_everywhere_says_why(fake_bin, capsys):
    fake(fake_bin, "scontrol", 'echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1')
    fake(fake_bin, "sacct", 'echo "sacct: error: Slurm accounting storage is disabled" >&2; exit 1')
    fake(fake_bin, "squeue", 'echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1')
    assert main(["launch", "status", "10"]) == 1
    assert "neither slurmctld (scontrol) nor accounting (sacct) knows it" in capsys.readouterr().err


def test_a_job_id_is_a_number(capsys):
    assert main(["launch", "status", "10; rm -rf /"]) == 2
    assert "give the number sbatch printed" in capsys.readouterr().err
