"""Background DCP saves (``checkpoint.async_save``) stage through one ``DefaultStager`` per checkpointer:
made at the first save, its host buffers refilled by the next (pinned on CUDA), freed by ``close``."""

from __future__ import annotations

from typing import Any

import torch
from torch.distributed.checkpoint.staging import DefaultStager, StagingOptions

from pipeline.config.model import ModelConfig
from pipeline.config.train import LoopConfig
from pipeline.model.transformer import build_model
from pipeline.parallel import dcp
from pipeline.parallel.base import ParallelModel
from pipeline.parallel.dist import DistInfo
from pipeline.parallel.registry import parallelize
from pipeline.train.loop import train_step

ARGS = ModelConfig(size="tiny", seq_len=16).args(vocab_size=101)
LOOP = LoopConfig(global_batch_size=4, micro_batch_size=4, warmup_steps=2)


def batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.randint(
        0, ARGS.vocab_size, (4, ARGS.seq_len + 1), generator=torch.Generator().manual_seed(seed)
    )
    return tokens[:, :-1], tokens[:, 1:].clone()


def build(dist: DistInfo) -> ParallelModel:
    torch.manual_seed(0)
    return parallelize(build_model(ARGS), strategy="ddp", dist=dist, loop=LOOP, total_steps=4)


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_background_saves_reuse_one_stager_and_each_checkpoint_holds_its_own_step(tmp_path, monkeypatch):
    made: list[DefaultStager] = []
    staged_at: list[int] = []  # where the first weight's staged copy lives, per save

    class Recorded(DefaultStager):
        def __init__(self, config: StagingOptions):
            super().__init__(config)
            made.append(self)

        def stage(self, state_dict: Any, **kwargs: Any) -> Any:
            staged = super().stage(state_dict, **kwargs)
            staged_at.append(staged["model"]["tok_embeddings.weight"].data_ptr())
            return staged

    monkeypatch.setattr(dcp, "DefaultStager", Recorded)
    dist = DistInfo()
    parallel = build(dist)
    checkpointer = parallel.checkpointer
    assert isinstance(checkpointer, dcp.DCPCheckpointer)
    expected = []
    for step in range(2):
        train_step(parallel, [batch(step)], dist=dist)
        expected.append((weights(parallel.model), parallel.scheduler.last_epoch))
        written = checkpointer.save_async(tmp_path / f"step_{step}", process_group=None)
        train_step(parallel, [batch(10 + step)], dist=dist)  # training goes on while the write runs
        written.result()
    assert len(made) == 1 and checkpointer.stager is made[0]
    assert staged_at[0] == staged_at[1]  # the second save refilled the first one's buffer
    for step in range(2):  # each holds its own step: refilled, not stale, and not changed by training after
        resumed = build(dist)
        resumed.load(tmp_path / f"step_{step}")
        saved, last_epoch = expected[step]
        assert weights(resumed.model).keys() == saved.keys()
        assert all(torch.equal(p, saved[name]) for name, p in weights(resumed.model).items())
        assert resumed.scheduler.last_epoch == last_epoch

    checkpointer.close()
    assert checkpointer.stager is None
    checkpointer.close()  # nothing left to free
    checkpointer.save_async(tmp_path / "again", process_group=None).result()
    assert len(made) == 2  # after close, a save stages into new buffers


def test_staging_is_pinned_and_non_blocking_only_with_cuda(monkeypatch):
    options: list[StagingOptions] = []
    monkeypatch.setattr(dcp, "DefaultStager", options.append)  # records, allocates nothing
    for cuda in (False, True):
        monkeypatch.setattr(torch.cuda, "is_available", lambda cuda=cuda: cuda)
        dcp.reused_stager()
    assert [(o.use_pinned_memory, o.use_non_blocking_copy) for o in options] == [(False, False), (True, True)]
    assert not any(o.use_async_staging or o.use_shared_memory for o in options)  # copied before save returns
