"""Every YAML in configs/ must load into its config class: a renamed key breaks this test, not a user."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from data_prep.config import PrepConfig
from data_prep.tokenizer.config import TokenizeConfig, TokenizerTrainConfig
from launch.slurm.profile import SlurmProfile
from pipeline.config.finetune import FinetuneJobConfig
from pipeline.config.train import TrainJobConfig
from pipeline.demo.run import DemoConfig
from pipeline.model.ladder import SIZES
from pipeline.scaling.plan import SweepConfig

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
LADDER_PRESETS = [size for size in SIZES if size != "tiny"]
"""configs/train/<size>.yaml: every rung above the CPU one at its Chinchilla budget."""

# file -> (config class, the overrides a user gives on the command line)
SHIPPED = {
    "demo.yaml": (DemoConfig, []),
    "data/prep.yaml": (PrepConfig, ["input=[x.warc.gz]", "output=o"]),
    "data/cc.yaml": (PrepConfig, ["input=[x.warc.gz]", "output=o"]),
    "data/fineweb.yaml": (PrepConfig, ["input=[x.warc.gz]", "output=o"]),
    "data/wiki.yaml": (PrepConfig, ["input=[x.xml.bz2]", "output=o"]),
    "data/mixed.yaml": (PrepConfig, ["input=[x.warc.gz,y.xml.bz2]", "output=o"]),
    "data/books.yaml": (PrepConfig, ["input=[x.jsonl.gz,y.xml.bz2,z.warc.gz]", "output=o"]),
    "data/tokenizer.yaml": (TokenizerTrainConfig, ["input=d", "output=o"]),
    "data/tokenize.yaml": (TokenizeConfig, ["input=[d]", "tokenizer=t", "output=o"]),
    "train/tiny.yaml": (TrainJobConfig, ["data.shards=s"]),
    "train/mixture.yaml": (TrainJobConfig, []),
    "train/fsdp.yaml": (TrainJobConfig, ["data.shards=s"]),
    "train/zero3.yaml": (TrainJobConfig, ["data.shards=s"]),
    **{f"train/{size}.yaml": (TrainJobConfig, ["data.shards=s"]) for size in LADDER_PRESETS},
    "finetune/tiny.yaml": (FinetuneJobConfig, ["init_from=c", "data.path=p"]),
    "finetune/chat.yaml": (FinetuneJobConfig, ["init_from=c", "data.path=p"]),
    "finetune/lora.yaml": (FinetuneJobConfig, ["init_from=c", "data.path=p"]),
    "slurm/local.yaml": (SlurmProfile, []),
    "slurm/gpu-8x.yaml": (SlurmProfile, ["partition=gpu"]),
    "slurm/gpu-8x-70b.yaml": (SlurmProfile, ["partition=gpu"]),
    "sweep/cpu-small.yaml": (SweepConfig, []),
    "sweep/ladder-isoflop.yaml": (SweepConfig, []),
    "sweep/cpu-books.yaml": (SweepConfig, []),
    "sweep/cpu-books-repeat.yaml": (SweepConfig, []),
    "sweep/cpu-books-predict.yaml": (SweepConfig, []),
    "sweep/cpu-books-tuned-predict.yaml": (SweepConfig, []),
    "sweep/cpu-books-tuned.yaml": (SweepConfig, []),
    "sweep/cpu-books-long.yaml": (SweepConfig, []),
    "sweep/cpu-books-fill.yaml": (SweepConfig, []),
    "sweep/cpu-books-mid.yaml": (SweepConfig, []),
    "sweep/cpu-books-seed2-hi.yaml": (SweepConfig, []),
    "sweep/cpu-books-seed2-lo.yaml": (SweepConfig, []),
    "sweep/cpu-books-small.yaml": (SweepConfig, []),
    "sweep/gpu-books.yaml": (SweepConfig, []),
}


def test_every_shipped_config_is_covered():
    found = {str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.yaml")}
    assert found == set(SHIPPED)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_config_loads(name):
    cls, overrides = SHIPPED[name]
    cls.load(CONFIGS / name, overrides)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_saved_yaml_is_omegaconfs_and_loads_back_equal(name, tmp_path):
    """``to_yaml`` skips OmegaConf's tree (slow) but must write what it writes: strings that read as
    numbers or booleans ("1e5", "true") quoted, lists as block lists."""
    cls, overrides = SHIPPED[name]
    config = cls.load(CONFIGS / name, overrides)
    assert config.to_yaml() == OmegaConf.to_yaml(OmegaConf.structured(config))
    assert cls.load(config.save(tmp_path / "saved.yaml")) == config


def test_saved_yaml_quotes_strings_that_would_load_as_other_types(tmp_path):
    config = PrepConfig(input=["1e5", "true", "null", "1.5", "~"], output="007")
    assert config.to_yaml() == OmegaConf.to_yaml(OmegaConf.structured(config))
    assert PrepConfig.load(config.save(tmp_path / "saved.yaml")) == config


def test_demo_yaml_matches_builtin_defaults():
    assert DemoConfig.load(CONFIGS / "demo.yaml") == DemoConfig()


@pytest.mark.parametrize("size", LADDER_PRESETS)
def test_ladder_preset_is_a_chinchilla_run_of_its_size_on_one_node(size):
    config = TrainJobConfig.load(CONFIGS / "train" / f"{size}.yaml", ["data.shards=s"])
    n_params = SIZES[size].non_embedding_params()
    step_tokens = config.train.global_batch_size * config.model.seq_len
    assert config.model.size == size and config.output_dir == f"runs/{size}"
    assert 19 <= config.train.max_tokens / n_params <= 21  # ~20 tokens per parameter
    assert 0.5 <= config.train.warmup_steps * step_tokens / n_params <= 2  # warmup ~N tokens
    config.train.grad_accum_steps(8)  # splits over one node of 8 GPUs
