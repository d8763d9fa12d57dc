"""`lmpipe demo` end to end, shortened: every stage runs for real (torchrun, DDP over gloo, MLflow)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

pytestmark = [pytest.mark.slow, pytest.mark.distributed]


def test_demo_runs_the_whole_loop(tmp_path: Path):
    workdir = tmp_path / "demo"
    lmpipe = Path(sys.executable).parent / "lmpipe"
    result = subprocess.run(
        [
            str(lmpipe),
            "demo",
            "--workdir",
            str(workdir),
            "pretrain.max_steps=30",
            "pretrain.eval_interval=0",
            "finetune.max_steps=6",
            "model.seq_len=128",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "lmpipe demo" in output and "mlflow ui --backend-store-uri sqlite:///" in output

    report = json.loads((workdir / "report.json").read_text())
    assert report["prep"]["totals"]["kept"] > 0
    assert report["manifest"]["totals"]["by_split"]["val"]["tokens"] > 0
    pretrain, finetune = report["pretrain"], report["finetune"]
    assert pretrain["world_size"] == 2 and pretrain["steps"] == 30
    assert pretrain["final_val_loss"] < pretrain["initial_val_loss"]
    assert pretrain["final_val_ppl"] < report["unigram_ppl"]
    assert finetune["last_train_loss"] < finetune["first_train_loss"]
    assert report["sample"] and set(report["chat"]) == {"prompt", "answer", "reference"}
    assert report["export"]["max_logit_diff"] < 1e-4  # transformers loads the export and agrees with us
    assert (workdir / "hf" / "config.json").is_file()

    for stage in ("data", "tokenizer", "shards", "pretrain", "finetune"):
        assert (workdir / stage / "config.yaml").is_file(), f"no resolved config next to {stage}/"

    # A client, not mlflow.set_tracking_uri: that sets $MLFLOW_TRACKING_URI for every later test in
    # the process.
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("lmpipe-demo").experiment_id])
    assert sorted(run.info.run_name for run in runs) == ["demo-finetune", "demo-pretrain"]
