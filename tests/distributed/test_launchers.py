"""Every launcher trains the same model to the same losses: one node of 2 ranks under torchrun (the
reference), two torchrun "nodes" of one rank each meeting by c10d rendezvous on 127.0.0.1, and
DeepSpeed's launcher with 2 CPU ranks. ZeRO-2 throughout, so the DeepSpeed engine runs under
each launcher; the tiny training is the one of test_kill_resume.py, cut to 4 steps."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.testing import free_port

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

LMPIPE = str(Path(sys.executable).with_name("lmpipe"))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}


def train_args(shards: Path, output: Path) -> list[str]:
    return [
        "train",
        f"data.shards={shards}",
        f"output_dir={output}",
        "parallel.strategy=zero2",
        "model.seq_len=64",
        "train.global_batch_size=8",
        "train.micro_batch_size=2",
        "train.max_steps=4",
        "train.warmup_steps=2",
        "train.log_interval=1",
        "train.eval_interval=0",
        "data.val_windows=8",
        "tracking.enabled=false",
    ]


def step_losses(output: str) -> dict[int, float]:
    return {
        int(m.group(1)): float(m.group(2))
        for m in re.finditer(r"train step\s+(\d+)/\d+\s+loss (\S+)", output)
    }


def finished(proc: subprocess.CompletedProcess | subprocess.Popen, output: str) -> str:
    assert proc.returncode == 0, output[-4000:]
    return output


@pytest.fixture(scope="module")
def one_node_losses(tiny_corpus, tmp_path_factory) -> dict[int, float]:
    output = tmp_path_factory.mktemp("one-node")
    proc = subprocess.run(
        [LMPIPE, "launch", "torchrun", "--nproc-per-node", "2", "--", *train_args(tiny_corpus[0], output)],
        capture_output=True,
        text=True,
        timeout=180,
        env=ENV,
    )
    losses = step_losses(finished(proc, proc.stdout + proc.stderr))
    assert sorted(losses) == [1, 2, 3, 4]
    return losses


def test_two_torchrun_nodes_train_as_one_node_of_two_ranks(tiny_corpus, tmp_path, one_node_losses):
    endpoint = f"127.0.0.1:{free_port()}"
    node = [
        LMPIPE,
        "launch",
        "torchrun",
        "--nnodes",
        "2",
        "--nproc-per-node",
        "1",
        "--rdzv-endpoint",
        endpoint,
        "--rdzv-id",
        "two-nodes",
        "--",
        *train_args(tiny_corpus[0], tmp_path / "out"),
    ]
    nodes = [
        subprocess.Popen(node, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
        for _ in range(2)
    ]
    try:
        outputs = [process.communicate(timeout=180)[0] for process in nodes]
    finally:
        for process in nodes:
            process.kill()
    for process, output in zip(nodes, outputs):
        finished(process, output)
    # Rank 0 prints the progress; the rendezvous decides which node holds it.
    losses = [step_losses(output) for output in outputs]
    assert sorted(map(len, losses)) == [0, 4]
    assert max(losses, key=len) == pytest.approx(one_node_losses, abs=2e-4)
    assert json.loads((tmp_path / "out" / "result.json").read_text())["world_size"] == 2


def test_deepspeed_launcher_trains_zero2_on_cpu_as_torchrun_does(tiny_corpus, tmp_path, one_node_losses):
    proc = subprocess.run(
        [
            LMPIPE,
            "launch",
            "deepspeed",
            "--num-gpus",
            "2",
            "--master-port",
            str(free_port()),
            "--",
            *train_args(tiny_corpus[0], tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=ENV,
    )
    output = finished(proc, proc.stdout + proc.stderr)
    assert step_losses(output) == pytest.approx(one_node_losses, abs=2e-4)
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["world_size"] == 2 and result["steps"] == 4
