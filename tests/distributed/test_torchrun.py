"""Real torchrun, 2 ranks over gloo: pretrain, then fine-tune, each through ``train()``/``finetune()``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config.eval import EvalJobConfig
from pipeline.eval.evaluate import evaluate

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SCRIPT = """
import sys
from pipeline.config.finetune import FinetuneJobConfig
from pipeline.config.train import TrainJobConfig
from pipeline.finetune.run import finetune
from pipeline.train.pretrain import train

verb, shards, sft, out, uri = sys.argv[1:]
loop = ["train.global_batch_size=8", "train.micro_batch_size=2", "train.warmup_steps=2",
        "train.log_interval=4", "train.eval_batches=2", f"tracking.uri={uri}"]
if verb == "train":
    train(TrainJobConfig.load(None, [f"data.shards={shards}", "data.val_windows=8",
                                     f"output_dir={out}/pretrain", "model.seq_len=64",
                                     "train.max_steps=12", "train.eval_interval=6", "checkpoint.interval=6",
                                     *loop]))
else:
    finetune(FinetuneJobConfig.load(None, [f"init_from={out}/pretrain", f"output_dir={out}/sft",
                                           f"data.path={sft}", "data.val_fraction=0.1", "train.max_steps=6",
                                           *loop]))
"""


def torchrun(script: Path, *args: str) -> subprocess.CompletedProcess:
    """One job per torchrun, as users run them (a process group is not re-created within a process)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(script),
            *args,
        ],
        cwd=script.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_torchrun_pretrain_and_finetune(tiny_corpus, tmp_path):
    from mlflow.tracking import MlflowClient

    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    corpus = [str(tiny_corpus[0]), str(tiny_corpus[1]), str(tmp_path), uri]
    proc = torchrun(script, "train", *corpus)
    # rank 0 alone prints progress: one line per log step, not two
    assert proc.stdout.count("train step    12/12  loss") == 1

    pretrain = json.loads((tmp_path / "pretrain" / "result.json").read_text())
    assert pretrain["world_size"] == 2 and pretrain["steps"] == 12 and pretrain["tokens_seen"] == 12 * 8 * 64
    assert pretrain["final_val_loss"] < pretrain["initial_val_loss"]
    assert sorted(p.name for p in (tmp_path / "pretrain" / "checkpoints").iterdir()) == [
        "latest",
        "step_12",
        "step_6",
    ]
    assert {p.name for p in Path(pretrain["checkpoint"]).glob("*.distcp")} == {"__0_0.distcp", "__1_0.distcp"}

    # The 2-rank checkpoint loads into one process, and validation is 8 fixed windows per source whatever
    # the world size: 2 batches of 4 in one process are the windows the 2 ranks shared.
    single = evaluate(
        EvalJobConfig(
            checkpoint=str(tmp_path / "pretrain"), shards=str(tiny_corpus[0]), batch_size=4, max_batches=2
        )
    )["lm"]
    assert single["loss"] == pytest.approx(pretrain["final_val_loss"], rel=1e-5)

    torchrun(script, "finetune", *corpus)
    sft = json.loads((tmp_path / "sft" / "result.json").read_text())
    assert sft["world_size"] == 2 and sft["final_val_loss"] < sft["initial_val_loss"]

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("lmpipe").experiment_id])
    assert sorted(run.info.run_id for run in runs) == sorted(
        [pretrain["mlflow_run_id"], sft["mlflow_run_id"]]
    )
    for run in runs:
        assert run.data.tags["world_size"] == "2" and run.info.status == "FINISHED"
