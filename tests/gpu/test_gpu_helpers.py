"""The GPU suite's own machinery, checked on any machine (these tests are not marked ``gpu``): a GPU is
lent rarely and briefly, so a job config the suite builds must not first fail there, and the spawned-rank
helper must already work, as it does here for the fp32 CPU reference."""

from __future__ import annotations

import pytest
from gpu_helpers import gpu_jobs, job_config, train_job


@pytest.mark.parametrize("job", gpu_jobs())
def test_every_job_the_gpu_suite_trains_is_a_valid_config_on_one_and_two_ranks(job):
    cfg = job_config("shards", "out", *gpu_jobs()[job])  # loading validates, as `lmpipe train` does
    for world_size in (1, 2):
        assert cfg.train.grad_accum_steps(world_size) >= 1  # the global batch splits over the ranks


@pytest.mark.slow
@pytest.mark.distributed
def test_a_job_trains_in_spawned_ranks_with_cuda_hidden(tiny_corpus, tmp_path):
    trained = train_job(tiny_corpus[0], tmp_path / "run", "train.max_steps=2", cuda=False)
    assert trained.on_cuda == [False] and trained.cuda_peak_bytes == 0 and trained.compiled_graphs == 0
    assert trained.result["steps"] == 2 and trained.result["world_size"] == 1
    assert (trained.output / "result.json").is_file()
