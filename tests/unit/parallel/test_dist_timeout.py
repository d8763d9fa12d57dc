"""parallel.timeout_seconds: a job's collectives always wait an explicit, long enough time (issue 20),
never torch's 10-minute nccl default, and the configured value reaches the process group."""

from __future__ import annotations

from datetime import timedelta

import pytest
import torch
import torch.distributed as dist

from pipeline.config.parallel import DEFAULT_TIMEOUT_S, ParallelConfig
from pipeline.config.train import TrainJobConfig
from pipeline.core.errors import ConfigError
from pipeline.parallel.dist import init_distributed, shutdown_distributed
from pipeline.train import pretrain


@pytest.fixture
def one_process(monkeypatch):
    """No torchrun environment; what init_distributed passes to init_process_group, recorded."""
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    calls: list[dict] = []
    real = dist.init_process_group

    def recording(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(dist, "init_process_group", recording)
    assert not dist.is_initialized()
    return calls


def group_timeout() -> timedelta:
    """The default group's timeout, as its gloo backend holds it."""
    return dist.distributed_c10d._get_default_group()._get_backend(torch.device("cpu")).options._timeout


def test_the_default_is_explicit_and_longer_than_torchs_nccl_default():
    assert ParallelConfig().timeout_seconds == DEFAULT_TIMEOUT_S >= 1800
    torch_nccl_default = timedelta(minutes=10)  # c10d's default_pg_nccl_timeout: None on CPU-only builds
    assert timedelta(seconds=DEFAULT_TIMEOUT_S) > torch_nccl_default


def test_a_negative_timeout_is_refused():
    with pytest.raises(ConfigError, match="parallel.timeout_seconds: must be >= 0"):
        TrainJobConfig.load(None, ["data.shards=/tmp/shards", "parallel.timeout_seconds=-1"])


@pytest.mark.parametrize(
    ("timeout_s", "expected"),
    [(None, DEFAULT_TIMEOUT_S), (0.0, DEFAULT_TIMEOUT_S), (42.0, 42.0)],
    ids=["none", "zero-as-saved-configs-say", "given"],
)
def test_the_timeout_reaches_the_process_group(one_process, timeout_s, expected):
    info = init_distributed("gloo", strategy="zero1", timeout_s=timeout_s)
    try:
        assert one_process[-1]["timeout"] == timedelta(seconds=expected)
        assert group_timeout() == timedelta(seconds=expected)
    finally:
        shutdown_distributed(info)


def test_the_train_job_passes_its_configured_timeout(monkeypatch):
    seen = {}

    class Stop(Exception):
        pass

    def fake_init(backend, *, strategy, timeout_s):
        seen.update(backend=backend, strategy=strategy, timeout_s=timeout_s)
        raise Stop

    monkeypatch.setattr(pretrain, "init_distributed", fake_init)
    cfg = TrainJobConfig.load(None, ["data.shards=/tmp/shards", "parallel.timeout_seconds=123"])
    with pytest.raises(Stop):
        pretrain.train(cfg)
    assert seen["timeout_s"] == 123
    with pytest.raises(Stop):
        pretrain.train(TrainJobConfig.load(None, ["data.shards=/tmp/shards"]))
    assert seen["timeout_s"] == DEFAULT_TIMEOUT_S
