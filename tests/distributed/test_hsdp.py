"""HSDP (``parallel.dp_replicate``): FSDP2 on a 2-D (replicate x shard) mesh of 4 real gloo ranks trains
like one process on the whole batch, and its checkpoint continues under FSDP x TP.

One launch (``parallel_layouts.run_layouts``): HSDP 2 x 2 for 20 steps, checkpointed at step 10, whose
checkpoint is then continued by 2-way FSDP x 2-way TP. Losses and gradient norms match the 1-process
reference to LOSS_RTOL / NORM_RTOL, the continuation the uninterrupted run's. Measured on the 2-core
CPU machine (shared, load ~10): losses within 7.8e-8 and norms within 4.9e-6 of the reference, the
continuation within 4.7e-8 / 3.1e-7; the launch took ~50 s, about half of it process start-up.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from parallel_layouts import LOOP, LOSS_RTOL, NORM_RTOL, SAVE_AT, Layout, reference, run_layouts

from pipeline.testing import run_distributed_test

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

HSDP = "hsdp"
LAYOUTS = [
    Layout(HSDP, {"strategy": "fsdp", "dp_replicate": 2}),
    Layout("fsdp x tp<-hsdp", {"strategy": "fsdp", "tp": 2}, resume=HSDP),
]


@pytest.fixture(scope="module")
def launch(tmp_path_factory) -> tuple[list[dict], Path]:
    root = tmp_path_factory.mktemp("ckpt-hsdp")
    ranks = run_distributed_test(
        run_layouts, world_size=4, timeout_s=300, layouts=LAYOUTS, checkpoint_root=str(root)
    )
    return ranks, root


def test_hsdp_trains_like_one_process(launch):
    ranks, _ = launch
    single = reference()
    # Sharded within pairs of ranks, replicated across the pairs.
    assert [rank[HSDP]["local_fraction"] for rank in ranks] == [1 / 2] * 4
    assert all(rank[HSDP]["losses"] == ranks[0][HSDP]["losses"] for rank in ranks)
    assert ranks[0][HSDP]["losses"] == pytest.approx(single["losses"], rel=LOSS_RTOL)
    assert ranks[0][HSDP]["norms"] == pytest.approx(single["norms"], rel=NORM_RTOL)
    assert max(single["norms"]) > LOOP.grad_clip  # so clipping took part


def test_hsdp_checkpoint_resumes_under_fsdp_x_tp(launch):
    ranks, _ = launch
    resumed, uninterrupted = ranks[0]["fsdp x tp<-hsdp"], ranks[0][HSDP]
    assert resumed["local_fraction"] == 1 / 4
    assert resumed["losses"] == pytest.approx(uninterrupted["losses"][SAVE_AT:], rel=LOSS_RTOL)
    assert resumed["norms"] == pytest.approx(uninterrupted["norms"][SAVE_AT:], rel=NORM_RTOL)
