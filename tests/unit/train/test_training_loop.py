"""The training loop in one process: outputs, token budget, accumulation, checkpoints cadence, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from pipeline.config.model import ModelConfig
from pipeline.config.train import LoopConfig, TrainJobConfig
from pipeline.core.errors import ConfigError
from pipeline.model.transformer import build_model
from pipeline.parallel.dist import DistInfo
from pipeline.parallel.registry import parallelize
from pipeline.train.checkpoint import read_meta, resolve_checkpoint
from pipeline.train.loop import train_step
from pipeline.train.pretrain import train


def test_pretraining_writes_result_config_and_checkpoint(pretrained: Path):
    result = json.loads((pretrained / "result.json").read_text())
    assert result["steps"] == 40 and result["tokens_seen"] == 40 * 8 * 64
    assert result["final_val_loss"] < result["initial_val_loss"] - 1.0
    assert result["last_train_loss"] < result["first_train_loss"] - 1.0
    assert result["n_params"] == 787_584 and result["world_size"] == 1 and result["strategy"] == "ddp"
    assert result["tokens_per_s"] > 0 and result["mlflow_run_id"] is None
    assert result["final_train_eval_loss"] is None  # data.train_eval_windows is off by default
    saved = TrainJobConfig.load(pretrained / "config.yaml")
    assert saved.train.max_steps == 40 and saved.model.seq_len == 64
    step_dir = resolve_checkpoint(pretrained)
    assert step_dir == pretrained / "checkpoints" / "step_40" == Path(result["checkpoint"])
    meta = read_meta(step_dir)
    assert meta["step"] == 40 and meta["tokens_seen"] == result["tokens_seen"]
    assert meta["loader"]["sample_index"] == 40 * 8 and meta["model"]["seq_len"] == 64
    assert (step_dir / "tokenizer.json").is_file() and (step_dir / "config.yaml").is_file()


def test_token_budget_is_exact_and_checkpoints_keep_the_newest(train_config):
    # 8 sequences x 64 tokens = 512 tokens per step: a 3,072-token budget is exactly 6 steps.
    cfg = train_config(
        "train.max_steps=100", "train.max_tokens=3072", "checkpoint.interval=2", "checkpoint.keep=2"
    )
    result = train(cfg)
    assert result.steps == 6 and result.tokens_seen == 3072
    checkpoints = Path(cfg.output_dir) / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["latest", "step_4", "step_6"]
    assert (checkpoints / "latest").read_text().strip() == "step_6"


def test_accumulated_micro_batches_equal_one_big_batch():
    """Two micro-batches of 2 and one of 4: same loss, same update (targets partly ignored, unevenly)."""
    args = ModelConfig(size="tiny", seq_len=32).args(vocab_size=101)
    tokens = torch.randint(0, 101, (4, 32), generator=torch.Generator().manual_seed(0))
    targets = torch.roll(tokens, -1, dims=1)
    targets[0, :20] = -100  # the first micro-batch has fewer targets than the second

    def one_step(micro_batches):
        torch.manual_seed(0)
        parallel = parallelize(
            build_model(args), strategy="ddp", dist=DistInfo(), loop=LoopConfig(), total_steps=10
        )
        loss, grad_norm = train_step(parallel, micro_batches, dist=DistInfo())
        return loss, grad_norm, [p.detach().clone() for p in parallel.model.parameters()]

    split = one_step([(tokens[:2], targets[:2]), (tokens[2:], targets[2:])])
    whole = one_step([(tokens, targets)])
    assert split[0] == pytest.approx(whole[0], abs=1e-6) and split[1] == pytest.approx(whole[1], rel=1e-5)
    for a, b in zip(split[2], whole[2]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)  # Adam amplifies float noise of tiny grads


def test_a_budget_that_is_not_whole_steps_is_refused_with_the_nearest_ones(train_config):
    with pytest.raises(
        ConfigError,
        match="train.max_tokens: 2600 is not a whole number of steps of "
        "global_batch_size x seq_len = 512 tokens; nearest: 2560 or 3072",
    ):
        train_config("train.max_tokens=2600")


def test_user_errors_name_the_path(train_config, tmp_path):
    missing = tmp_path / "no-shards"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        train(train_config(f"data.shards={missing}"))
    with pytest.raises(ValueError, match="global_batch_size"):
        train(train_config("train.global_batch_size=6"))


def test_a_mixture_draws_by_weight_and_records_what_each_source_gave(train_config):
    # 6 steps x 8 sequences = 48 samples at 3:1 (exactly 3:1 over each block of 4,096 samples, in a
    # seeded order inside it, so about 36 and 12 here).
    cfg = train_config(
        "train.max_steps=6",
        "data.sources.web.weight=3",
        "data.sources.wiki.source=wiki",
        "data.sources.wiki.weight=1",
    )
    result = train(cfg)
    data = json.loads((Path(cfg.output_dir) / "result.json").read_text())["data"]
    samples = {name: entry["samples"] for name, entry in data.items()}
    assert sum(samples.values()) == 48 and 2 * samples["wiki"] < samples["web"] < 5 * samples["wiki"]
    assert sum(entry["tokens"] for entry in data.values()) == result.tokens_seen == 48 * 64
    assert all(entry["repeats"] == 0 for entry in data.values())


def test_shards_of_two_tokenizers_cannot_be_mixed(train_config, tiny_corpus, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(tiny_corpus[0], other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["tokenizer"]["sha256"] = "0" * 64
    (other / "manifest.json").write_text(json.dumps(manifest))
    cfg = train_config("train.max_steps=1", "data.sources.a.weight=1", f"data.sources.b.shards={other}")
    with pytest.raises(ValueError, match=f"{other / 'manifest.json'} was tokenized with another tokenizer"):
        train(cfg)


def test_corrupt_shards_stop_training_before_the_first_step(train_config, tiny_corpus, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_corpus[0], broken)
    shard = sorted(broken.rglob("*.arrow"))[0]
    data = bytearray(shard.read_bytes())
    data[-20] ^= 0xFF  # one flipped byte inside the last batch: still a readable stream, another sha256
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=shard.name):
        train(train_config(f"data.shards={broken}", "train.max_steps=1"))
    assert not (tmp_path / "run" / "checkpoints").exists()
