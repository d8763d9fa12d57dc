"""``lmpipe plan memory``, and ``lmpipe launch slurm``'s fit warning; the 70b preset renders for 8 nodes."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.cli.main import main

REPO = Path(__file__).resolve().parents[3]
TRAIN = REPO / "configs" / "train"
PROFILE_70B = str(REPO / "configs" / "slurm" / "gpu-8x-70b.yaml")
STRATEGY_ROWS = [["ddp"], ["fsdp"], ["zero1"], ["zero2"], ["zero3"]]


def test_plan_memory_prints_every_strategy_against_the_device(capsys):
    argv = ["plan", "memory", "--config", str(TRAIN / "13b.yaml"), "--nodes", "1", "--device-memory", "80"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "vocabulary 32000 (assumed" in out and "80 GiB (given)" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.split()[:1] in STRATEGY_ROWS}
    assert set(rows) == {"ddp", "fsdp", "zero1", "zero2", "zero3"}
    assert rows["fsdp"][-1] == "yes" and rows["ddp"][-1] == "NO"  # 13B replicated: 16 bytes a weight
    assert "fsdp *" in out  # the config's own strategy


def test_plan_memory_without_a_device_says_unknown_and_reads_the_vocabulary(tmp_path, capsys):
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "manifest.json").write_text(json.dumps(_manifest(vocab_size=50304)))
    argv = ["plan", "memory", "--config", str(TRAIN / "1.3b.yaml"), f"data.shards={shards}"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "vocabulary 50304" in out and "device memory: unknown" in out and "does not fit" not in out


def test_plan_memory_suggests_when_it_does_not_fit(capsys):
    argv = ["plan", "memory", "--config", str(TRAIN / "70b.yaml"), "--nodes", "1", "--device-memory", "80"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "does not fit; try:" in out and "nodes of 8 GPUs" in out
    assert "zero1" not in out  # lmpipe runs tensor parallelism under ddp and fsdp only


def test_plan_memory_refuses_a_layout_that_does_not_split(capsys):
    argv = ["plan", "memory", "--config", str(TRAIN / "70b.yaml"), "--gpus-per-node", "4", "--nodes", "1"]
    assert main(argv) == 2
    assert "tp 8 does not divide 4 ranks" in capsys.readouterr().err


def test_70b_renders_for_8_nodes_of_8_gpus_without_a_fit_warning(capsys):
    argv = ["launch", "slurm", "--profile", PROFILE_70B, "--set", "partition=gpu", "--dry-run", "--"]
    argv += ["train", "--config", str(TRAIN / "70b.yaml"), "data.shards=/shared/shards"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "#SBATCH --nodes=8" in captured.out and "#SBATCH --gpus-per-node=8" in captured.out
    assert "--nproc_per_node=8" in captured.out and "configs/train/70b.yaml" in captured.out
    assert "warning" not in captured.err


def test_launch_warns_before_a_job_that_cannot_fit(capsys):
    argv = ["launch", "slurm", "--profile", PROFILE_70B, "--set", "partition=gpu", "--nodes", "1"]
    argv += ["--dry-run", "--", "train", "--config", str(TRAIN / "70b.yaml"), "data.shards=/shared/shards"]
    assert main(argv) == 0  # a warning: the script is still printed
    err = capsys.readouterr().err
    assert err.startswith("lmpipe: warning: fsdp needs ~") and "more than 90% of 80 GiB" in err


def _manifest(*, vocab_size: int) -> dict:
    return {
        "format_version": 1,
        "tokenizer": {"path": "tokenizer.json", "sha256": "0", "vocab_size": vocab_size, "eos_id": 0},
        "dtype": "uint16",
        "shards": [],
        "totals": {},
        "mixture": None,
        "command": "",
    }
