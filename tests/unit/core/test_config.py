"""Config validation: every mistake is caught before work starts, in one line naming the key."""

from pathlib import Path

import pytest

from data_prep.config import PrepConfig
from pipeline.config.train import TrainJobConfig
from pipeline.core.errors import ConfigError
from pipeline.model.ladder import SIZES, default_lr

VALID = ["data.shards=/tmp/shards"]


def load_error(overrides, path=None) -> str:
    with pytest.raises(ConfigError) as info:
        TrainJobConfig.load(path, [*VALID, *overrides])
    message = str(info.value)
    assert "\n" not in message
    return message


def test_overrides_reach_nested_fields_with_their_types():
    cfg = TrainJobConfig.load(None, [*VALID, "train.lr=3e-4", "model.size=14m", "train.max_steps=7"])
    assert cfg.train.lr == pytest.approx(3e-4) and isinstance(cfg.train.lr, float)
    assert cfg.model.args().d_model == 384
    assert cfg.train.max_steps == 7


def test_unknown_key_names_it_and_lists_valid_keys():
    message = load_error(["train.lrr=1"])
    assert "train.lrr" in message and "valid keys under 'train'" in message and "lr," in message


def test_unknown_top_level_key():
    assert "unknown key 'bogus'" in load_error(["bogus=1"])


def test_wrong_type_names_the_key():
    assert "train.lr" in load_error(["train.lr=fast"])


def test_heads_must_divide_width():
    message = load_error(["model.n_heads=5"])
    assert "model.n_heads" in message and "d_model=128" in message


def test_choice_lists_valid_values():
    message = load_error(["model.size=huge"])
    assert "valid choices: tiny, 14m" in message
    assert "valid choices: ddp" in load_error(["parallel.strategy=horovod"])


def test_missing_required_value():
    with pytest.raises(ConfigError, match="data.shards"):
        TrainJobConfig.load(None, [])


def test_yaml_file_then_overrides(tmp_path: Path):
    path = tmp_path / "train.yaml"
    path.write_text("train:\n  lr: 0.01\n  max_steps: 5\ndata:\n  shards: s\n")
    cfg = TrainJobConfig.load(path, ["train.max_steps=9"])
    assert (cfg.train.lr, cfg.train.max_steps, cfg.data.shards) == (0.01, 9, "s")


def test_typo_in_yaml_file_is_caught(tmp_path: Path):
    path = tmp_path / "train.yaml"
    path.write_text("train:\n  warmup: 10\n")
    assert "train.warmup" in load_error([], path)


def test_missing_config_file():
    assert "not found" in load_error([], "/nonexistent/train.yaml")


def test_override_without_equals_sign():
    assert "key.sub=value" in load_error(["train.lr"])


def test_saved_config_loads_back_equal(tmp_path: Path):
    cfg = TrainJobConfig.load(None, [*VALID, "train.lr=0.02", "model.n_kv_heads=4"])
    again = TrainJobConfig.load(cfg.save(tmp_path / "config.yaml"))
    assert again == cfg
    assert TrainJobConfig.from_dict(cfg.to_dict()) == cfg


def test_flat_params_for_tracking():
    flat = TrainJobConfig.load(None, VALID).flat()
    assert (
        flat["train.lr"] == str(default_lr(SIZES["tiny"].non_embedding_params()))
        and flat["model.size"] == "tiny"
    )


def test_typed_flag_values_merge_without_reparsing():
    cfg = PrepConfig.load(None, [], values={"input": ["a,b.warc.gz"], "output": "o", "workers": None})
    assert cfg.input == ["a,b.warc.gz"] and cfg.workers == 1


def test_grad_accumulation_must_divide_evenly():
    cfg = TrainJobConfig.load(None, [*VALID, "train.global_batch_size=24", "train.micro_batch_size=8"])
    assert cfg.train.grad_accum_steps(world_size=1) == 3
    with pytest.raises(ConfigError, match="global_batch_size"):
        cfg.train.grad_accum_steps(world_size=2)


def test_english_stop_words_refuse_other_languages_with_the_fix():
    base = ["input=[x.warc.gz]", "output=o", "language.languages=[en,de]"]
    with pytest.raises(ConfigError, match=r"quality.min_stop_words.*\['de'\].*min_stop_words=0"):
        PrepConfig.load(None, base)
    assert PrepConfig.load(None, [*base, "quality.min_stop_words=0"]).language.languages == ["en", "de"]
