"""Checkpoints: a saved model gives the same loss when loaded; a full restore resumes exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.config.model import ModelConfig
from pipeline.config.train import LoopConfig, TrainJobConfig
from pipeline.model.transformer import build_model
from pipeline.parallel.dist import DistInfo
from pipeline.parallel.registry import parallelize
from pipeline.train.checkpoint import load_model_for_inference, resolve_checkpoint, save_checkpoint
from pipeline.train.loop import train_step

ARGS = ModelConfig(size="tiny", seq_len=32, tie_embeddings=False).args(vocab_size=101)


def batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.randint(0, 101, (4, 33), generator=torch.Generator().manual_seed(seed))
    return tokens[:, :-1], tokens[:, 1:]


def fresh(seed: int):
    torch.manual_seed(seed)
    return parallelize(
        build_model(ARGS), strategy="ddp", dist=DistInfo(), loop=LoopConfig(warmup_steps=2), total_steps=10
    )


def save(parallel, out: Path, step: int, tokenizer: Path) -> Path:
    return save_checkpoint(
        out,
        parallel=parallel,
        dist=DistInfo(),
        step=step,
        tokens_seen=step * 128,
        config=TrainJobConfig(),
        model_args=ARGS,
        tokenizer_file=tokenizer,
        loader_state={"sample_index": step},
        mlflow_run_id=None,
        seed=0,
        keep=2,
    )


def test_saved_model_gives_the_same_loss_and_training_resumes_exactly(tmp_path, tiny_corpus):
    tokenizer = tiny_corpus[0] / "tokenizer.json"
    original = fresh(0)
    for seed in range(3):
        train_step(original, [batch(seed)], dist=DistInfo())
    step_dir = save(original, tmp_path, 3, tokenizer)

    inputs, targets = batch(99)
    with torch.no_grad():
        expected = original.model(inputs, targets)[1]
    model, args, loaded_tokenizer = load_model_for_inference(tmp_path)  # an output dir: resolved to latest
    assert args == ARGS and loaded_tokenizer.get_vocab_size() > 0
    with torch.no_grad():
        assert model(inputs, targets)[1].item() == expected.item()

    resumed = fresh(1)  # other init; the restore must overwrite all of it
    resumed.load(step_dir)
    assert resumed.lr == original.lr
    for seed in (3, 4):
        assert train_step(resumed, [batch(seed)], dist=DistInfo()) == train_step(
            original, [batch(seed)], dist=DistInfo()
        )
    for a, b in zip(original.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)


def test_resolve_checkpoint(tmp_path, tiny_corpus):
    parallel = fresh(0)
    first = save(parallel, tmp_path, 1, tiny_corpus[0] / "tokenizer.json")
    second = save(parallel, tmp_path, 2, tiny_corpus[0] / "tokenizer.json")
    assert resolve_checkpoint(tmp_path) == second
    assert resolve_checkpoint(tmp_path / "checkpoints") == second
    assert resolve_checkpoint(first) == first
    with pytest.raises(FileNotFoundError, match="not found"):
        resolve_checkpoint(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        resolve_checkpoint(tiny_corpus[0])
