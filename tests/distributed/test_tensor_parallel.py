"""Tensor parallelism (``parallel.tp``) on 4 real gloo ranks trains like one process on the whole batch,
and its checkpoints resume under other layouts.

One launch of 4 ranks (``parallel_layouts.run_layouts``): ddp with tp 2 (2 replicas of a 2-rank TP
group), fsdp with tp 2 (2-way FSDP x 2-way TP) checkpointed at step 10, then that checkpoint continued
by FSDP over all 4 ranks and by HSDP 2 x 2; one plain process continues it under ddp too. Every run's
losses match the 1-process reference (``parallel_layouts.reference``) to LOSS_RTOL over 20 steps, and
a continuation the uninterrupted run's: DCP reshards the TP x FSDP DTensors (weights and AdamW state)
into each layout. Then ``lmpipe train`` under torchrun with fsdp x tp: the loader splits data by
data-parallel rank (the losses match the shared 2-rank fsdp reference run), and the TP checkpoint
consolidates and exports to Hugging Face.

Measured on the 2-core CPU machine (shared, load ~10): losses within 3.6e-7 of the reference, gradient
norms within 4.2e-5 (tensor parallelism sums each matmul's partial products in another order, and
Adam's m / sqrt(v) magnifies that over the steps; step 0's norm is equal); the continuations within
5e-8 (losses) and 8e-7 (norms) of the uninterrupted run. The launch took 63-83 s, ~25 s of it the
start of 4 processes; the 4-rank lmpipe job ~40 s (plus the fsdp reference when no other test shares it).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from parallel_layouts import (
    ARGS,
    LOOP,
    LOSS_RTOL,
    NORM_RTOL,
    SAVE_AT,
    Layout,
    reference,
    resume_in_one_process,
    run_layouts,
)

from pipeline.config.parallel import ParallelConfig
from pipeline.core.errors import ConfigError
from pipeline.model.transformer import build_model
from pipeline.parallel.dist import DistInfo
from pipeline.parallel.registry import parallelize
from pipeline.testing import run_distributed_test

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

FSDP_TP = "fsdp x tp"
LAYOUTS = [
    Layout("ddp x tp", {"strategy": "ddp", "tp": 2}),
    Layout(FSDP_TP, {"strategy": "fsdp", "tp": 2}),
    Layout("fsdp<-fsdp x tp", {"strategy": "fsdp"}, resume=FSDP_TP),
    Layout("hsdp<-fsdp x tp", {"strategy": "fsdp", "dp_replicate": 2}, resume=FSDP_TP),
]
LOCAL_FRACTION = {"ddp x tp": 1 / 2, FSDP_TP: 1 / 4, "fsdp<-fsdp x tp": 1 / 4, "hsdp<-fsdp x tp": 1 / 2}


@pytest.fixture(scope="module")
def single() -> dict[str, list[float]]:
    return reference()


@pytest.fixture(scope="module")
def launch(tmp_path_factory) -> tuple[list[dict], Path]:
    root = tmp_path_factory.mktemp("ckpt-tp")
    ranks = run_distributed_test(
        run_layouts, world_size=4, timeout_s=300, layouts=LAYOUTS, checkpoint_root=str(root)
    )
    return ranks, root


@pytest.mark.parametrize("label", ["ddp x tp", FSDP_TP])
def test_tensor_parallel_trains_like_one_process(launch, single, label):
    ranks, _ = launch
    assert [rank[label]["local_fraction"] for rank in ranks] == [LOCAL_FRACTION[label]] * 4
    assert all(rank[label]["losses"] == ranks[0][label]["losses"] for rank in ranks)  # the global loss
    assert ranks[0][label]["losses"] == pytest.approx(single["losses"], rel=LOSS_RTOL)
    assert ranks[0][label]["norms"] == pytest.approx(single["norms"], rel=NORM_RTOL)
    assert max(single["norms"]) > LOOP.grad_clip  # so clipping took part


@pytest.mark.parametrize("label", ["fsdp<-fsdp x tp", "hsdp<-fsdp x tp"])
def test_tensor_parallel_checkpoint_resumes_under_another_layout(launch, label):
    ranks, _ = launch
    assert ranks[0][label]["local_fraction"] == LOCAL_FRACTION[label]
    uninterrupted = ranks[0][FSDP_TP]
    assert ranks[0][label]["losses"] == pytest.approx(uninterrupted["losses"][SAVE_AT:], rel=LOSS_RTOL)
    assert ranks[0][label]["norms"] == pytest.approx(uninterrupted["norms"][SAVE_AT:], rel=NORM_RTOL)


def test_tensor_parallel_checkpoint_resumes_in_one_ddp_process(launch):
    ranks, root = launch
    losses = resume_in_one_process(root / FSDP_TP)
    assert losses == pytest.approx(ranks[0][FSDP_TP]["losses"][SAVE_AT:], rel=LOSS_RTOL)


@pytest.mark.parametrize(
    ("options", "world_size", "message"),
    [
        ({"strategy": "zero2", "tp": 2}, 2, r"^config error: parallel.tp: only for strategy ddp/fsdp"),
        ({"strategy": "ddp", "tp": 3}, 6, r"^config error: parallel.tp: model.n_heads 4 is not a multiple"),
        (
            {"strategy": "fsdp", "tp": 4},
            4,
            r"^config error: parallel.tp: model.n_kv_heads 2 is not a multiple",
        ),
        ({"strategy": "fsdp", "tp": 2}, 3, r"^config error: parallel.tp: world_size 3 is not a multiple"),
        (
            {"strategy": "fsdp", "tp": 2, "dp_replicate": 2},
            6,
            r"^config error: parallel.dp_replicate: world_size 6 is not a multiple of tp x dp_replicate = 4",
        ),
    ],
)
def test_a_layout_that_does_not_fit_fails_before_any_setup(options, world_size, message):
    model = build_model(ARGS)  # stays on meta: nothing was materialised
    with pytest.raises(ConfigError, match=message):
        parallelize(
            model,
            strategy=ParallelConfig(**options),
            dist=DistInfo(world_size=world_size),
            loop=LOOP,
            total_steps=10,
        )
    assert model.output.weight.is_meta


def test_pretraining_with_tensor_parallel_consolidates_and_exports(train_jobs, tmp_path):
    """``lmpipe train`` on 4 ranks, fsdp x tp 2 x 2: every rank of a TP group reads its replica's batch
    (the loss curve is the shared 2-rank fsdp reference's: the same 2 replicas), and its checkpoint
    consolidates and exports to HF."""
    from pipeline.hf.export import export_hf
    from pipeline.train.checkpoint import consolidate, load_consolidated, load_model_for_inference

    tp_run = tmp_path / "tp"
    stdout = train_jobs.run(4, tp_run, "", "parallel.strategy=fsdp", "parallel.tp=2")
    tp_result = json.loads((tp_run / "result.json").read_text())
    fsdp_result = json.loads((train_jobs.reference("fsdp").output / "result.json").read_text())
    for key in ("first_train_loss", "last_train_loss", "final_val_loss"):
        assert tp_result[key] == pytest.approx(fsdp_result[key], rel=LOSS_RTOL), (key, stdout[-2000:])

    weights = consolidate(tp_run, tmp_path / "tp.safetensors")
    model, _, _ = load_model_for_inference(tp_run)
    for name, tensor in load_consolidated(weights).state_dict().items():
        assert tensor.equal(model.state_dict()[name]), name
    exported = export_hf(tp_run, tmp_path / "hf")
    assert json.loads((exported / "config.json").read_text())["vocab_size"] == model.args.vocab_size
