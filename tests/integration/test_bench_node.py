"""``lmpipe bench node`` on CPU (tiny, gloo, fp32), as CI and a user without a GPU run it; the sums its
report is read by; and ``bench/gpu_check.sh``, whose GPU half only a GPU machine runs (here: its
syntax, and its ``--cpu`` rehearsal end to end)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.benchmark.collectives import bus_bandwidth
from pipeline.benchmark.config import CPU_DEFAULTS, GPU_DEFAULTS, resolve
from pipeline.benchmark.results import results_table
from pipeline.core.errors import ConfigError
from pipeline.testing import free_port

REPO = Path(__file__).resolve().parents[2]
LMPIPE = str(Path(sys.executable).with_name("lmpipe"))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def lmpipe(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run([LMPIPE, *args], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_bus_bandwidth_is_nccl_tests_all_reduce_factor():
    assert bus_bandwidth(10.0, 1) is None  # nothing crosses a link
    assert bus_bandwidth(10.0, 2) == pytest.approx(10.0)
    assert bus_bandwidth(10.0, 8) == pytest.approx(17.5)  # 2 * 7 / 8


def test_defaults_follow_the_device_and_flags_override_them():
    assert resolve(True) == GPU_DEFAULTS and GPU_DEFAULTS.size == "1.3b" and GPU_DEFAULTS.precision == "bf16"
    cpu = resolve(False, strategy="zero2", seconds=None)
    assert (cpu.size, cpu.strategy, cpu.precision, cpu.seconds) == (
        "tiny",
        "zero2",
        "fp32",
        CPU_DEFAULTS.seconds,
    )
    with pytest.raises(ConfigError, match="--seconds"):
        resolve(False, seconds=0)


@pytest.mark.slow
def test_one_process_reports_sane_figures(tmp_path):
    report_file = tmp_path / "node.json"
    proc = lmpipe("bench", "node", "--seconds", "1", "--json", str(report_file))
    report = json.loads(report_file.read_text())
    assert report["world_size"] == 1 and report["nodes"] == 1 and report["torch"]
    assert report["config"]["size"] == "tiny" and report["config"]["precision"] == "fp32"
    reduce = report["all_reduce"]
    assert reduce["ranks"] == 1 and reduce["algbw_gbps"] > 0 and reduce["busbw_gbps"] is None
    train = report["train"]
    assert train["steps"] >= 1 and train["tokens_per_s_per_device"] > 0 and train["skipped_steps"] == 0
    assert train["mfu"] is None  # no peak for a CPU: no made-up MFU
    assert 10 * 2**20 < train["peak_memory_bytes"] < 16 * 2**30 and "RSS" in train["memory_kind"]
    (rank,) = report["per_rank"]
    assert rank["matmul"]["tflops"] > 0 and rank["matmul"]["fraction_of_peak"] is None
    assert report["per_node"][0]["ranks"] == [0]
    assert "tokens/s per device" in proc.stdout and "busbw undefined (one rank)" in proc.stdout
    table = results_table([report])
    assert "| fsdp | 4 |" in table and "`lmpipe bench node --size tiny --strategy fsdp" in table


def torchrun(*args: str, nnodes: int = 1, node_rank: int | None = None, endpoint: str = "") -> list[str]:
    """``lmpipe launch torchrun`` of ``bench node`` with 2 ranks per node."""
    launch = [LMPIPE, "launch", "torchrun", "--nproc-per-node", "2" if nnodes == 1 else "1"]
    if nnodes > 1:
        launch += ["--nnodes", str(nnodes), "--node-rank", str(node_rank), "--rdzv-endpoint", endpoint]
    return [*launch, "--", "bench", "node", "--seconds", "1", *args]


@pytest.mark.distributed
@pytest.mark.slow
def test_two_ranks_one_report(tmp_path):
    report_file = tmp_path / "node.json"
    proc = lmpipe(*torchrun("--json", str(report_file))[1:])
    assert proc.stdout.count("lmpipe bench node:") == 1  # rank 0 alone reports
    report = json.loads(report_file.read_text())
    assert report["world_size"] == 2 and report["nodes"] == 1
    assert [r["rank"] for r in report["per_rank"]] == [0, 1]
    reduce = report["all_reduce"]
    assert reduce["ranks"] == 2 and reduce["busbw_gbps"] == pytest.approx(
        reduce["algbw_gbps"]
    )  # 2(n-1)/n = 1
    assert (
        report["per_node"][0]["ranks"] == [0, 1] and report["per_node"][0]["all_reduce_within_node"] is None
    )
    assert all(r["train"]["steps"] == report["train"]["steps"] for r in report["per_rank"])


@pytest.mark.distributed
@pytest.mark.slow
def test_two_nodes_measure_within_each_node(tmp_path):
    """Two torchrun launchers on this host are two nodes to the job (as under Slurm, one per node): the
    report has one entry per node, each with the all-reduce within it, besides the one across both."""
    report_file = tmp_path / "node.json"
    endpoint = f"127.0.0.1:{free_port()}"
    procs = [
        subprocess.Popen(
            torchrun("--json", str(report_file), nnodes=2, node_rank=rank, endpoint=endpoint),
            cwd=REPO,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [proc.communicate(timeout=180)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    report = json.loads(report_file.read_text())
    assert report["world_size"] == 2 and report["nodes"] == 2
    assert [node["ranks"] for node in report["per_node"]] == [[0], [1]]
    assert report["per_node"][0]["node"].endswith("(node 0)")
    assert report["all_reduce"]["ranks"] == 2
    for node in report["per_node"]:
        assert (
            node["all_reduce_within_node"]["ranks"] == 1 and node["all_reduce_within_node"]["algbw_gbps"] > 0
        )


def test_gpu_check_script_parses():
    subprocess.run(["bash", "-n", str(REPO / "bench" / "gpu_check.sh")], check=True)


@pytest.mark.slow
def test_gpu_check_cpu_rehearsal(tmp_path):
    """The script's CPU-safe half: bench node for fsdp and zero2, their reports, the RESULTS.md rows."""
    env = {**ENV, "GPU_CHECK_OUT": str(tmp_path), "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu_check.sh"), "--cpu"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "bench-fsdp.json",
        "bench-zero2.json",
        "gpu_check.log",
        "results.md",
    ]
    rows = (tmp_path / "results.md").read_text().splitlines()
    assert rows[0].startswith("### ") and "commit" in rows[0]
    assert [row.split("|")[1].strip() for row in rows if row.startswith("| ") and "---" not in row] == [
        "strategy",
        "fsdp",
        "zero2",
    ]
    assert "2/2 bench runs" in proc.stdout
