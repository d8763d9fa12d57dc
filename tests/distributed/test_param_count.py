"""N (the non-embedding parameter count) of a job is the model's whatever the strategy: under ZeRO-3 each
rank's parameters are empty partitions after set-up, and counting them gave N = 100,352 for a
model of millions (issue 20), so MFU, the N/D/C tags and result.json were wrong."""

from __future__ import annotations

import json

import pytest

from pipeline.config.model import ModelConfig
from pipeline.testing import require_module

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

WIDE = "model.d_model=320"
"""Weights over DeepSpeed's stage3_param_persistence_threshold (1e5 elements: wq is 320 x 320), which ZeRO-3
partitions; the tiny rung's are all under it and stay whole on every rank."""


def test_zero3_reports_the_same_n_as_ddp(train_jobs, tmp_path):
    results, tags = {}, {}
    for strategy in ("ddp", "zero3"):
        output = tmp_path / strategy
        uri = train_jobs.store(tmp_path / f"{strategy}.db")
        options = (f"parallel.strategy={strategy}", "train.max_steps=2", "checkpoint.interval=0", WIDE)
        train_jobs.run(train_jobs.command(2, output, uri, *options))
        results[strategy] = json.loads((output / "result.json").read_text())
        client = require_module("mlflow.tracking").MlflowClient(tracking_uri=uri)
        tags[strategy] = client.get_run(results[strategy]["mlflow_run_id"]).data.tags
    ddp, zero3 = results["ddp"], results["zero3"]
    assert zero3["strategy"] == "zero3" and zero3["world_size"] == 2
    wide = ModelConfig(size="tiny", d_model=320).args(vocab_size=512)
    assert ddp["n_params"] == wide.non_embedding_params()
    assert (zero3["n_params"], zero3["n_params_total"]) == (ddp["n_params"], ddp["n_params_total"])
    assert tags["zero3"]["N"] == tags["ddp"]["N"] == str(ddp["n_params"])
    assert tags["zero3"]["C"] == str(6 * ddp["n_params"] * zero3["tokens_seen"])
