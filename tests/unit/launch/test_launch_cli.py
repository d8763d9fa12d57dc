"""``lmpipe launch``: dry runs print what would run, the verb's config is checked before anything
starts, and a Slurm submission runs its checks (one line each) before ``sbatch``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pipeline.cli.main import main

REPO = Path(__file__).resolve().parents[3]
GPU_8X = str(REPO / "configs" / "slurm" / "gpu-8x.yaml")
LOCAL = str(REPO / "configs" / "slurm" / "local.yaml")


def one_line_error(capsys, argv: list[str], expected: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("lmpipe: error: ") and expected in err and err.count("\n") == 1, err


@pytest.mark.parametrize("launcher", ["torchrun", "deepspeed", "slurm", "status"])
def test_every_launcher_has_help(launcher, capsys):
    with pytest.raises(SystemExit) as info:
        main(["launch", launcher, "--help"])
    assert info.value.code == 0 and f"usage: lmpipe launch {launcher}" in capsys.readouterr().out


def test_torchrun_dry_run_prints_the_command(capsys):
    assert (
        main(
            [
                "launch",
                "torchrun",
                "--nnodes",
                "2",
                "--gpus-per-node",
                "8",
                "--rdzv-endpoint",
                "node01:29500",
                "--dry-run",
                "--",
                "train",
                "data.shards=my shards",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "--nnodes=2 --rdzv_backend=c10d --rdzv_endpoint=node01:29500" in out
    assert out.rstrip().endswith("--nproc_per_node=8 -m pipeline.cli train 'data.shards=my shards'")


def test_deepspeed_dry_run_prints_the_command(capsys):
    assert main(["launch", "deepspeed", "--num-gpus", "2", "--dry-run", "--", "train", "data.shards=s"]) == 0
    assert (
        "-m deepspeed.launcher.runner --master_port=29500 --num_gpus=2 --no_local_rank --module pipeline.cli "
        "train data.shards=s" in capsys.readouterr().out
    )


@pytest.mark.parametrize("launcher", ["torchrun", "deepspeed"])
def test_a_bad_verb_config_fails_before_any_rank_starts(launcher, capsys):
    one_line_error(
        capsys, ["launch", launcher, "--", "train", "data.shards=s", "train.lrr=1"], "unknown key 'train.lrr'"
    )


def test_no_verb_is_a_clear_error(capsys):
    one_line_error(capsys, ["launch", "torchrun"], "give the verb to run after --")


def test_slurm_profile_errors_are_one_line(capsys):
    one_line_error(
        capsys,
        ["launch", "slurm", "--profile", GPU_8X, "--dry-run", "--", "train", "data.shards=s"],
        "partition: this profile requires it",
    )
    one_line_error(
        capsys,
        [
            "launch",
            "slurm",
            "--profile",
            GPU_8X,
            "--set",
            "partitio=gpu",
            "--dry-run",
            "--",
            "train",
            "data.shards=s",
        ],
        "unknown key 'partitio'",
    )


def test_slurm_dry_run_prints_the_script(capsys):
    assert (
        main(
            [
                "launch",
                "slurm",
                "--profile",
                GPU_8X,
                "--set",
                "partition=gpu",
                "--nodes",
                "4",
                "--dry-run",
                "--",
                "train",
                "--config",
                "configs/train/1.3b.yaml",
                "data.shards=/shared/shards",
            ]
        )
        == 0
    )
    script = capsys.readouterr().out
    assert script.startswith("#!/bin/bash\n") and "#SBATCH --nodes=4" in script
    assert f"#SBATCH --chdir={os.getcwd()}" in script
    assert "train --config configs/train/1.3b.yaml data.shards=/shared/shards &" in script


def test_slurm_deepspeed_dry_run(capsys):
    assert (
        main(
            [
                "launch",
                "slurm",
                "--profile",
                LOCAL,
                "--launcher",
                "deepspeed",
                "--dry-run",
                "--",
                "train",
                "data.shards=s",
            ]
        )
        == 0
    )
    script = capsys.readouterr().out
    assert (
        "sed 's/$/ slots=2/' > \"$hostfile\"" in script and 'deepspeed --node_rank="$SLURM_NODEID"' in script
    )


def test_slurm_array_dry_run(capsys, tmp_path):
    configs = []
    for name in ("a", "b"):
        (tmp_path / f"{name}.yaml").write_text(f"output_dir: runs/{name}\ndata: {{shards: s}}\n")
        configs.append(str(tmp_path / f"{name}.yaml"))
    assert (
        main(
            [
                "launch",
                "slurm",
                "--profile",
                LOCAL,
                "--array-configs",
                *configs,
                "--max-parallel",
                "1",
                "--dry-run",
                "--",
                "train",
            ]
        )
        == 0
    )
    assert "#SBATCH --array=0-1%1" in capsys.readouterr().out
    one_line_error(
        capsys,
        [
            "launch",
            "slurm",
            "--profile",
            LOCAL,
            "--array-configs",
            *configs,
            "--dry-run",
            "--",
            "train",
            "--config",
            configs[0],
        ],
        "leave --config out",
    )


def fake_shards(directory: Path) -> Path:
    (directory / "shards").mkdir(parents=True)
    (directory / "tokenizer.json").write_text("{}")
    (directory / "shards" / "0.arrow").write_bytes(b"")
    manifest = {"tokenizer": {"path": "tokenizer.json"}, "shards": [{"path": "shards/0.arrow"}]}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


def fake_sbatch(bin_dir: Path) -> None:
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text('#!/bin/bash\necho "$@" > "$(dirname "$0")/args"\necho "4242;cluster"\n')
    (bin_dir / "sbatch").chmod(0o755)


def test_slurm_submit_checks_then_writes_the_script_with_the_run_and_prints_the_job_id(
    tmp_path, monkeypatch, capsys
):
    fake_sbatch(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.chdir(tmp_path)
    shards = fake_shards(tmp_path / "data")
    assert (
        main(
            [
                "launch",
                "slurm",
                "--profile",
                LOCAL,
                "--",
                "train",
                f"data.shards={shards}",
                "output_dir=runs/t",
                "train.global_batch_size=8",
                "train.micro_batch_size=2",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert captured.out == "4242\n"
    assert "lmpipe: ok: sbatch found" in captured.err and "FAILED" not in captured.err
    script = tmp_path / "runs" / "t" / "slurm" / "lmpipe-train.sbatch"
    assert (tmp_path / "bin" / "args").read_text().split() == [
        "--parsable",
        "runs/t/slurm/lmpipe-train.sbatch",
    ]
    assert f"#SBATCH --chdir={tmp_path}" in script.read_text() and (tmp_path / "logs").is_dir()


def test_slurm_submit_reports_every_failed_check_and_submits_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken").write_text("a file, not a directory")
    assert (
        main(
            [
                "launch",
                "slurm",
                "--profile",
                LOCAL,
                "--",
                "train",
                f"data.shards={tmp_path / 'none'}",
                "output_dir=taken/run",
                "train.global_batch_size=6",
                "train.micro_batch_size=2",
                "train.precision=bf16",
                "checkpoint.resume=never",
            ]
        )
        == 2
    )
    failed = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lmpipe: FAILED: ")]
    for expected in (
        "sbatch not found",
        "output_dir taken/run is not writable",
        "manifest.json missing",
        "not a multiple of micro_batch_size x world_size",
        "train.precision=bf16 on CPU-only nodes",
        "checkpoint.resume='never'",
    ):
        assert sum(expected in line for line in failed) == 1, (expected, failed)
