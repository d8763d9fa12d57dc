"""Corpora built once per session for the unit tests: the tiny token shards + SFT JSONL with tiny job
configs over them, and the generated demo corpus (WARC, wiki dump, SFT pairs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config.train import TrainJobConfig
from pipeline.demo.corpus import CorpusFiles, generate_corpus
from pipeline.testing import make_tiny_corpus

TINY = [
    "model.size=tiny",
    "model.seq_len=64",
    "train.global_batch_size=8",
    "train.micro_batch_size=4",
    "train.warmup_steps=2",
    "train.log_interval=5",
    "train.eval_interval=0",
    "data.val_windows=8",
    "tracking.enabled=false",
]


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> tuple[Path, Path]:
    """(shards_dir, sft_jsonl)."""
    return make_tiny_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture
def train_config(tiny_corpus, tmp_path):
    """``train_config("train.max_steps=4", ...)``: a tiny TrainJobConfig writing under tmp_path."""

    def make(*overrides: str) -> TrainJobConfig:
        return TrainJobConfig.load(
            None, [f"data.shards={tiny_corpus[0]}", f"output_dir={tmp_path / 'run'}", *TINY, *overrides]
        )

    return make


@pytest.fixture(scope="session")
def pretrained(tiny_corpus, tmp_path_factory) -> Path:
    """Output dir of a short pretraining run (checkpoint at its end), shared by the read-only tests."""
    from pipeline.train.pretrain import train

    out = tmp_path_factory.mktemp("pretrained")
    train(
        TrainJobConfig.load(
            None,
            [
                f"data.shards={tiny_corpus[0]}",
                f"output_dir={out}",
                *TINY,
                "train.max_steps=40",
                "train.lr=3e-3",
            ],
        )
    )
    return out


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> CorpusFiles:
    return generate_corpus(tmp_path_factory.mktemp("corpus"), seed=11, n_entities=40)
