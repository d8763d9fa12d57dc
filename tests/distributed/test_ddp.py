"""DDP over real gloo process groups: one step on 2 ranks equals one step on the whole batch in 1 process."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist

from pipeline.config.model import ModelConfig
from pipeline.config.train import LoopConfig
from pipeline.model.transformer import build_model
from pipeline.parallel.dist import init_distributed
from pipeline.parallel.registry import parallelize
from pipeline.testing import run_distributed_test
from pipeline.testing_jobs import start_job
from pipeline.train.loop import train_step

pytestmark = pytest.mark.distributed

ARGS = ModelConfig(size="tiny", seq_len=32).args(vocab_size=101)
GLOBAL_BATCH = 8


def global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.randint(0, 101, (GLOBAL_BATCH, 33), generator=torch.Generator().manual_seed(0))
    inputs, targets = tokens[:, :-1], tokens[:, 1:].clone()
    targets[0, :25] = -100  # ranks and micro-batches hold different numbers of targets
    targets[5, 10:] = -100
    return inputs, targets


def one_step(micro_batch_size: int) -> dict:
    """On each rank: its share of the global batch in micro-batches, one optimizer step."""
    info = init_distributed()
    torch.manual_seed(info.rank)  # different init per rank: DDP must broadcast rank 0's
    parallel = parallelize(build_model(ARGS), strategy="ddp", dist=info, loop=LoopConfig(), total_steps=10)
    grads = {}
    parallel.optimizer.register_step_pre_hook(
        lambda *_: grads.update({name: p.grad.clone() for name, p in parallel.model.named_parameters()})
    )
    inputs, targets = global_batch()
    mine = slice(
        info.rank * GLOBAL_BATCH // info.world_size, (info.rank + 1) * GLOBAL_BATCH // info.world_size
    )
    inputs, targets = inputs[mine], targets[mine]
    micro = [
        (inputs[i : i + micro_batch_size], targets[i : i + micro_batch_size])
        for i in range(0, len(inputs), micro_batch_size)
    ]
    loss, grad_norm = train_step(parallel, micro, dist=info)
    return {
        "loss": loss,
        "grad_norm": grad_norm,
        "grads": grads,
        "params": {name: p.detach().clone() for name, p in parallel.model.named_parameters()},
        "world_size": dist.get_world_size() if dist.is_initialized() else 1,
    }


@pytest.mark.slow
def test_ddp_step_equals_single_process_step():
    ranks = run_distributed_test(one_step, world_size=2, micro_batch_size=2)  # 2 ranks x 2 micro-steps x 2
    single = one_step(micro_batch_size=4)  # this process, no group: 2 micro-steps x 4
    assert [r["world_size"] for r in ranks] == [2, 2] and single["world_size"] == 1
    for name, param in ranks[0]["params"].items():
        assert torch.equal(param, ranks[1]["params"][name]), name
        assert torch.equal(ranks[0]["grads"][name], ranks[1]["grads"][name]), name
    assert ranks[0]["loss"] == ranks[1]["loss"]
    assert abs(ranks[0]["loss"] - single["loss"]) < 1e-5
    assert ranks[0]["grad_norm"] == pytest.approx(single["grad_norm"], rel=1e-4)
    for name, grad in single["grads"].items():
        torch.testing.assert_close(ranks[0]["grads"][name], grad, rtol=1e-4, atol=1e-6)
    for name, param in single["params"].items():
        torch.testing.assert_close(ranks[0]["params"][name], param, rtol=1e-4, atol=1e-5)


def sum_ranks(scale: float) -> float:
    tensor = torch.ones(1) * (dist.get_rank() + 1) * scale
    dist.all_reduce(tensor)
    return tensor.item()


def test_run_distributed_test_returns_each_ranks_value():
    assert run_distributed_test(sum_ranks, world_size=2, scale=2.0) == [6.0, 6.0]


def fail_on_rank_one() -> None:
    if dist.get_rank() == 1:
        raise RuntimeError("rank one broke")


def test_run_distributed_test_raises_a_ranks_error():
    with pytest.raises(Exception, match="rank one broke"):
        run_distributed_test(fail_on_rank_one, world_size=2)


def where_am_i() -> tuple[str | None, str]:
    return os.environ.get("LMPIPE_TEST_MARK"), os.getcwd()


def test_ranks_see_the_callers_environment_and_directory_as_they_are_at_the_call(tmp_path, monkeypatch):
    """A rank forked from the fork server (started by an earlier call, with that call's environment)
    still sees this call's environment and working directory, as a spawned one would."""
    run_distributed_test(sum_ranks, world_size=2, scale=1.0)  # the server is up before the change
    monkeypatch.setenv("LMPIPE_TEST_MARK", "now")
    monkeypatch.chdir(tmp_path)
    assert run_distributed_test(where_am_i, world_size=2) == [("now", str(tmp_path))] * 2


def test_a_forked_lmpipe_job_reports_its_exit_code_and_output(tmp_path):
    job = start_job(["train", "--config", str(tmp_path / "missing.yaml")], 2, tmp_path / "job.log")
    assert job.wait(120) == 2  # a user error: exit 2 and one line, from rank 0 only
    assert (tmp_path / "job.log").read_text().count("lmpipe: error:") == 1
