"""SIGKILL one rank of a 2-rank torchrun job mid-training: the other exits within a bounded time (no
rank waits forever in a collective), the job fails, and its output says which rank died and how."""

from __future__ import annotations

import os
import signal
import time

import pytest
from faultjobs import Job, train_command

from pipeline.testing import alive, descendants

pytestmark = [pytest.mark.faults, pytest.mark.distributed, pytest.mark.slow]

BOUND_S = 60


def test_a_dead_rank_ends_the_job_in_bounded_time_naming_the_rank(tiny_corpus, tmp_path):
    job = Job.start(
        train_command(2, tiny_corpus[0], tmp_path / "run", "train.max_steps=2000"), tmp_path / "job.log"
    )
    assert job.wait_for(r"train step\s+3/"), job.output[-3000:]
    ranks = descendants(job.process.pid, LOCAL_RANK="0") + descendants(job.process.pid, LOCAL_RANK="1")
    rank_1 = ranks[1]
    os.kill(rank_1, signal.SIGKILL)
    killed = time.monotonic()
    code = job.wait(timeout_s=BOUND_S)
    assert time.monotonic() - killed < BOUND_S
    assert code != 0
    output = job.output
    assert "train step  2000/2000" not in output
    assert "rank      : 1 (local_rank: 1)" in output and "Signal 9 (SIGKILL)" in output, output[-3000:]
    assert not [pid for pid in ranks if alive(pid)], "a rank outlived the job"
