"""Continued pretraining (``init_from``): the run starts from a checkpoint's weights with a fresh optimizer,
schedule and loader, and refuses weights of another model shape or tokenizer."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from pipeline.core.errors import ConfigError
from pipeline.train.pretrain import train
from pipeline.train.step_files import DEFAULT_CHECKSUM_MAX_BYTES, CorruptCheckpointError, write_checksums


def test_init_from_starts_from_the_pretrained_weights(pretrained: Path, train_config, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    pretrained_val = json.loads((pretrained / "result.json").read_text())["final_val_loss"]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = train(
        train_config(
            f"init_from={pretrained}",
            "train.max_steps=2",
            "train.lr=3e-4",
            "tracking.enabled=true",
            f"tracking.uri={uri}",
        )
    )
    source = pretrained / "checkpoints" / "step_40"
    assert f"train starting from the weights of {source} (step 40)" in capsys.readouterr().out
    assert MlflowClient(tracking_uri=uri).get_run(result.mlflow_run_id).data.tags["init_from"] == str(source)
    # the same weights on the same validation windows: the pretrained run's last val loss, far below a fresh
    # init
    assert result.initial_val_loss == pytest.approx(pretrained_val, abs=1e-4)
    assert result.initial_val_loss < 0.7 * math.log(512) and result.first_train_loss < 0.7 * math.log(512)
    assert result.steps == 2  # a fresh schedule: this run's own steps, not the pretrained run's 40 + 2
    shorter = train(
        train_config(
            f"init_from={pretrained}",
            f"output_dir={tmp_path / 'short'}",
            "model.seq_len=32",
            "train.max_steps=1",
        )
    )  # RoPE has no weights: another seq_len loads
    assert shorter.initial_val_loss < 0.7 * math.log(512)


def test_init_from_refuses_another_shape_or_tokenizer(pretrained: Path, train_config, tmp_path):
    with pytest.raises(ValueError, match=r"init_from .*step_40 is of another model \(n_layers"):
        train(train_config(f"init_from={pretrained}", "model.size=tiny", "model.n_layers=3"))
    other = tmp_path / "other_tokenizer"
    shutil.copytree(pretrained / "checkpoints" / "step_40", other)
    (other / "tokenizer.json").write_text((other / "tokenizer.json").read_text() + "\n")
    with pytest.raises(CorruptCheckpointError, match=r"tokenizer.json has \d+ bytes"):
        train(train_config(f"init_from={other}"))  # edited after the save: its checksums say so
    write_checksums(other, hash_max_bytes=DEFAULT_CHECKSUM_MAX_BYTES)  # as if saved with that tokenizer
    with pytest.raises(ValueError, match=f"init_from {other} was trained with another tokenizer than"):
        train(train_config(f"init_from={other}"))
    with pytest.raises(ConfigError, match="init_from: is this run's own output_dir"):
        train_config(f"init_from={tmp_path / 'run'}")
