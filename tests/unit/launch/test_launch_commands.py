"""The command lines the local launchers run, and the host names they accept."""

from __future__ import annotations

import sys

import pytest

from launch.deepspeed import DeepSpeedLaunch, deepspeed_command
from launch.hosts import check_nodelist, render_hostfile, split_endpoint
from launch.torchrun import torchrun_command

VERB = ["train", "--config", "c.yaml"]
TAIL = ["-m", "pipeline.cli", *VERB]


def test_one_node_is_standalone():
    assert torchrun_command(VERB, nproc_per_node=2) == [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        *TAIL,
    ]


def test_several_nodes_meet_by_c10d_rendezvous():
    command = torchrun_command(VERB, nproc_per_node=8, nnodes=4, rdzv_endpoint="node01:29500", rdzv_id="run7")
    assert command[3:] == [
        "--nnodes=4",
        "--rdzv_backend=c10d",
        "--rdzv_endpoint=node01:29500",
        "--rdzv_id=run7",
        "--nproc_per_node=8",
        *TAIL,
    ]


def test_a_node_rank_means_static_rendezvous():
    command = torchrun_command(VERB, nproc_per_node=8, nnodes=2, node_rank=1, rdzv_endpoint="10.0.0.1:29500")
    assert command[3:7] == ["--nnodes=2", "--node_rank=1", "--master_addr=10.0.0.1", "--master_port=29500"]


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(nproc_per_node=0), "--nproc-per-node must be >= 1"),
        (dict(nproc_per_node=1, nnodes=2), "needs --rdzv-endpoint"),
        (dict(nproc_per_node=1, nnodes=2, node_rank=2, rdzv_endpoint="h:1"), "--node-rank"),
        (dict(nproc_per_node=1, nnodes=2, rdzv_endpoint="h"), "expected HOST:PORT"),
        (dict(nproc_per_node=1, nnodes=2, rdzv_endpoint="bad host:29500"), "invalid host name 'bad host'"),
    ],
)
def test_bad_torchrun_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        torchrun_command(VERB, **options)


def test_deepspeed_runs_our_module_without_a_local_rank_argument():
    command = deepspeed_command(VERB, DeepSpeedLaunch(num_gpus=2, master_port=29511))
    assert command == [
        sys.executable,
        "-m",
        "deepspeed.launcher.runner",
        "--master_port=29511",
        "--num_gpus=2",
        "--no_local_rank",
        "--module",
        *TAIL[1:],
    ]


def test_deepspeed_multi_node_flags(tmp_path):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text(render_hostfile(["node1", "node2"], 8))
    command = deepspeed_command(
        VERB, DeepSpeedLaunch(hostfile=str(hostfile), num_nodes=2, master_addr="node1")
    )
    assert (
        f"--hostfile={hostfile}" in command
        and "--num_nodes=2" in command
        and "--master_addr=node1" in command
    )


@pytest.mark.parametrize(
    "launch, message",
    [
        (DeepSpeedLaunch(include="node1", num_gpus=2), "cannot be combined"),
        (DeepSpeedLaunch(include="a", exclude="b"), "not both"),
        (DeepSpeedLaunch(num_nodes=2), "needs --hostfile"),
        (DeepSpeedLaunch(hostfile="/nonexistent/hostfile"), "hostfile not found"),
        (DeepSpeedLaunch(master_addr="node1;rm"), "invalid host name"),
    ],
)
def test_bad_deepspeed_options_are_named(launch, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        deepspeed_command(VERB, launch)


def test_hostfile_lines_are_host_slots():
    assert render_hostfile(["gpu-001", "gpu-002.cluster.local", "10.1.2.3"], 8) == (
        "gpu-001 slots=8\ngpu-002.cluster.local slots=8\n10.1.2.3 slots=8\n"
    )


@pytest.mark.parametrize(
    "hosts, slots, message",
    [
        (["node 1"], 8, "invalid host name 'node 1'"),
        (["node1\nnode2 slots=99"], 8, "invalid host name"),
        (["-oProxyCommand=x"], 8, "invalid host name"),
        (["n1", "n1"], 8, "listed twice"),
        ([], 8, "at least one host"),
        (["n1"], 0, "slots"),
    ],
)
def test_bad_hostfiles_are_refused(hosts, slots, message):
    with pytest.raises(ValueError, match=message):
        render_hostfile(hosts, slots)


def test_endpoints_and_nodelists():
    assert split_endpoint("node01:29500") == ("node01", 29500)
    assert check_nodelist("gpu[001-004,007],login1") == "gpu[001-004,007],login1"
    for bad in ("gpu[01-04", "gpu01 gpu02", "gpu$(id)"):
        with pytest.raises(ValueError, match="invalid Slurm node list"):
            check_nodelist(bad)
