"""The Slurm path without Slurm: each element of the plan run as ``python -m launch.slurm.task``
writes what a local run writes; and the CLI's ``--shard-size-mb`` and ``--executor`` reach the config."""

from __future__ import annotations

import json
import subprocess
import sys

from data_prep.executor.slurm import SlurmExecutor
from data_prep.tokenizer.config import TokenizeConfig
from data_prep.tokenizer.tokenize import tokenize
from launch.slurm.sbatch import TASK_MODULE
from pipeline.cli.main import main


def shard_bytes(output) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((output / "shards").iterdir())}


def test_plan_elements_run_by_task_main_match_a_local_run(tmp_path, docs_dir, tokenizer_file, monkeypatch):
    ran = []

    def submit_and_run_here(self, stage, depends_on=None):
        plan = self.plan_path(stage.name)
        for index in range(len(json.loads(plan.read_text())["tasks"])):
            element = subprocess.run(
                [sys.executable, "-m", TASK_MODULE, str(plan), str(index)],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert element.returncode == 0, element.stderr
            ran.append(element.stdout)
        return "1"

    monkeypatch.setattr(SlurmExecutor, "submit", submit_and_run_here)
    monkeypatch.setattr(SlurmExecutor, "wait", lambda self, stages: None)
    common = {"input": [str(docs_dir)], "tokenizer": str(tokenizer_file.parent), "shard_size_bytes": 700}
    slurm = tokenize(TokenizeConfig(output=str(tmp_path / "slurm"), executor="slurm", **common))
    local = tokenize(TokenizeConfig(output=str(tmp_path / "local"), **common))
    assert len(ran) == 3 and all("done: 60 docs" in out for out in ran)
    assert slurm["shards"] == local["shards"] and shard_bytes(tmp_path / "slurm") == shard_bytes(
        tmp_path / "local"
    )
    plan = json.loads((tmp_path / "slurm" / "slurm" / "tokenize" / "plan.json").read_text())
    again = subprocess.run(
        [
            sys.executable,
            "-m",
            TASK_MODULE,
            str(tmp_path / "slurm" / "slurm" / "tokenize" / "plan.json"),
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert again.returncode == 0 and "already done; skipped" in again.stdout
    assert plan["config"]["executor"] == "slurm" and plan["tasks"][0]["eos_id"] == 1


def test_cli_shard_size_mb_and_executor_flags(tmp_path, docs_dir, tokenizer_file, capsys):
    assert (
        main(
            [
                "data",
                "tokenize",
                "--input",
                str(docs_dir),
                "--tokenizer",
                str(tokenizer_file.parent),
                "--output",
                str(tmp_path),
                "--shard-size-mb",
                "0.001",
                "--executor",
                "local",
            ]
        )
        == 0
    )
    assert TokenizeConfig.load(tmp_path / "config.yaml").shard_size_bytes == 1048
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert len(manifest["shards"]) > 8
    assert f"{len(manifest['shards'])} shards, 180 docs" in capsys.readouterr().out
    assert (
        main(
            [
                "data",
                "tokenize",
                "--input",
                str(docs_dir),
                "--tokenizer",
                str(tokenizer_file.parent),
                "--output",
                str(tmp_path),
                "--executor",
                "ray",
            ]
        )
        == 2
    )
    assert "executor: got 'ray'; valid choices: local, slurm" in capsys.readouterr().err
