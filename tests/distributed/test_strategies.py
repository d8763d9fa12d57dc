"""Every strategy on a real 2-rank gloo group trains like one process on the whole batch, and its
checkpoints round-trip (on the same world size, and into one process).

Two launches serve all the tests (module fixtures), so process start-up and DeepSpeed's import and
engine set-up are paid once: one for ddp + fsdp, one for zero1/2/3; runs with offload options too.

Tolerances against the reference (ddp in one process, same global batch; fp32, 4 steps, clipping
active), with what was measured on the 2-core CPU machine over all the runs below:
losses rtol 1e-6 (measured <= 5e-8), grad norms rtol 1e-5 (<= 4e-7), final weights per tensor
||w - w_ref|| / ||w_ref|| <= 1e-4 (<= 3e-6, zero3 the largest: its reduce-scatter sums in another
order, and Adam's m / sqrt(v) magnifies that in elements whose gradient is near zero).
A checkpoint round trip is exact: the resumed run's losses equal the uninterrupted run's.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
)

from pipeline.config.model import ModelConfig
from pipeline.config.parallel import ParallelConfig
from pipeline.config.train import LoopConfig
from pipeline.core.errors import ConfigError
from pipeline.model.transformer import build_model
from pipeline.parallel.base import ParallelModel
from pipeline.parallel.dcp import load_model_weights
from pipeline.parallel.dist import DistInfo, init_distributed
from pipeline.parallel.registry import parallelize
from pipeline.parallel.zero_checkpoint import TAG, DeepSpeedCheckpointer
from pipeline.testing import run_distributed_test
from pipeline.train.loop import train_step

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

ARGS = ModelConfig(size="tiny", seq_len=16).args(vocab_size=101)
# Peak lr reached at step 2, clipping active (the tiny model's first grad norms are ~2-4).
LOOP = LoopConfig(global_batch_size=8, micro_batch_size=2, warmup_steps=2, lr=3e-3, grad_clip=1.0)
STEPS, SAVE_AT, SEED = 4, 2, 1234
TORCH_RUNS = ["ddp", "fsdp", "fsdp+offload"]
ZERO_RUNS = ["zero1", "zero2", "zero3", "zero2+offload", "zero3+offload"]
MODEL_ONLY = [
    "zero1<-zero3",
    "zero3<-zero2",
    "zero3+offload<-zero1",
    "fsdp<-zero3",
]  # {fresh run <- checkpoint}
LOSS_RTOL, NORM_RTOL, WEIGHT_RTOL = 1e-6, 1e-5, 1e-4  # against the 1-process reference (module docstring)
PARAMS = [name for name, _ in build_model(ARGS).named_parameters()]  # a tied head is the embedding, once


def global_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.randint(
        0,
        ARGS.vocab_size,
        (LOOP.global_batch_size, ARGS.seq_len + 1),
        generator=torch.Generator().manual_seed(step),
    )
    inputs, targets = tokens[:, :-1], tokens[:, 1:].clone()
    targets[0, :12] = -100  # ranks and micro-batches hold different numbers of targets
    targets[5, 4:] = -100
    return inputs, targets


def train_steps(parallel: ParallelModel, info: DistInfo, steps: range) -> tuple[list[float], list[float]]:
    """(losses, grad norms) of ``steps``, each rank taking its slice of the global batch in micro-batches."""
    losses, norms = [], []
    share = LOOP.global_batch_size // info.world_size
    for step in steps:
        inputs, targets = global_batch(step)
        mine = slice(info.rank * share, (info.rank + 1) * share)
        inputs, targets = inputs[mine], targets[mine]
        micro = [
            (inputs[i : i + LOOP.micro_batch_size], targets[i : i + LOOP.micro_batch_size])
            for i in range(0, share, LOOP.micro_batch_size)
        ]
        loss, norm = train_step(parallel, micro, dist=info)
        losses.append(loss)
        norms.append(norm)
    return losses, norms


def full_weights(parallel: ParallelModel) -> dict[str, torch.Tensor]:
    """The whole model's weights on the CPU, whatever the strategy (collective)."""
    if parallel.strategy == "fsdp":
        state = get_model_state_dict(parallel.model, options=StateDictOptions(full_state_dict=True))
        return {name: state[name].cpu() for name in PARAMS}
    params = dict(parallel.model.named_parameters())
    gathered = contextlib.nullcontext()
    if parallel.strategy == "zero3":
        import deepspeed

        gathered = deepspeed.zero.GatheredParameters(list(params.values()))
    with gathered:
        return {name: p.detach().cpu().clone() for name, p in params.items()}


# Runs by label: a strategy, optionally with its options ("+offload").
OPTIONS = {
    "fsdp+offload": {"fsdp_cpu_offload": True, "fsdp_reshard_after_forward": False},
    "zero2+offload": {"zero_offload_optimizer": True},
    "zero3+offload": {"zero_offload_optimizer": True, "zero_offload_params": True},
}


def build(label: str, info: DistInfo, seed: int = SEED) -> ParallelModel:
    torch.manual_seed(seed)
    options = ParallelConfig(strategy=label.split("+")[0], **OPTIONS.get(label, {}))
    return parallelize(build_model(ARGS), strategy=options, dist=info, loop=LOOP, total_steps=10)


def local_fraction(parallel: ParallelModel) -> float:
    """How much of one weight matrix this rank holds: 1 replicated, 1 / world_size sharded."""
    weight = parallel.model.layers[0].attention.wq.weight
    if parallel.strategy == "fsdp":
        return weight.to_local().numel() / weight.numel()
    if parallel.strategy == "zero3":
        return weight.ds_tensor.numel() / weight.ds_numel
    return 1.0


def run_strategies(labels: list[str], checkpoint_root: str, model_only: dict[str, str]) -> dict[str, Any]:
    """On each rank, per run label: STEPS steps with a save after SAVE_AT, then a fresh model (another
    seed) loads that checkpoint and redoes the last steps. ``model_only``: {label: label of another
    run} whose checkpoint a fresh model loads as weights only."""
    info = init_distributed()
    out: dict[str, Any] = {}
    for label in labels:
        parallel = build(label, info)
        fraction = local_fraction(parallel)
        losses, norms = train_steps(parallel, info, range(SAVE_AT))
        directory = Path(checkpoint_root) / label
        parallel.save(directory)
        saved = full_weights(parallel)
        more = train_steps(parallel, info, range(SAVE_AT, STEPS))
        final = full_weights(parallel)
        del parallel
        resumed = build(label, info, seed=SEED + 1)
        resumed.load(directory)
        loaded = full_weights(resumed)
        after = train_steps(resumed, info, range(SAVE_AT, STEPS))
        out[label] = {
            "losses": losses + more[0],
            "norms": norms + more[1],
            "saved": saved,
            "final": final,
            "loaded": loaded,
            "resumed_losses": after[0],
            "resumed_norms": after[1],
            "local_fraction": fraction,
        }
    for label, source in model_only.items():
        fresh = build(label, info, seed=SEED + 2)
        fresh.load(Path(checkpoint_root) / source, model_only=True)
        entry = {"weights": full_weights(fresh)}
        if fresh.strategy.startswith("zero"):  # the optimizer's fp32 master copy must have been set too
            import deepspeed

            entry["master"] = {
                name: deepspeed.utils.safe_get_full_fp32_param(p).cpu()
                for name, p in fresh.model.named_parameters()
            }
        entry["losses"] = train_steps(fresh, info, range(SAVE_AT, SAVE_AT + 1))[0]
        out[f"{label}<-{source}"] = entry
    return out


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    """ddp in this process, no group: 4 micro-steps of 2 over the whole global batch."""
    info = DistInfo()
    parallel = build("ddp", info)
    losses, norms = train_steps(parallel, info, range(STEPS))
    return {"losses": losses, "norms": norms, "final": full_weights(parallel)}


@pytest.fixture(scope="module")
def torch_launch(tmp_path_factory) -> tuple[list[dict], Path]:
    root = tmp_path_factory.mktemp("ckpt-torch")
    return run_distributed_test(
        run_strategies, world_size=2, labels=TORCH_RUNS, checkpoint_root=str(root), model_only={}
    ), root


@pytest.fixture(scope="module")
def zero_launch(tmp_path_factory, monkeypatch_module) -> tuple[list[dict], Path]:
    root = tmp_path_factory.mktemp("ckpt-zero")
    extensions = tmp_path_factory.mktemp("torch-extensions")
    # A fresh extensions dir: a stale JIT lock elsewhere cannot hang the test, and we can see nothing was
    # built.
    monkeypatch_module.setenv("TORCH_EXTENSIONS_DIR", str(extensions))
    ranks = run_distributed_test(
        run_strategies,
        world_size=2,
        timeout_s=300,
        labels=ZERO_RUNS,
        checkpoint_root=str(root),
        model_only=dict(load.split("<-") for load in MODEL_ONLY),
    )
    assert not any(extensions.iterdir()), "DeepSpeed JIT-compiled an op"
    return ranks, root


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def assert_weights_equal(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert sorted(actual) == sorted(expected) == sorted(PARAMS)
    for name, tensor in expected.items():
        assert torch.equal(actual[name], tensor), name


def assert_weights_close(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert sorted(actual) == sorted(expected) == sorted(PARAMS)
    for name, tensor in expected.items():
        error = float((actual[name] - tensor).norm() / tensor.norm())
        assert error <= WEIGHT_RTOL, f"{name}: relative error {error:.2e}"


def check_equivalence(ranks: list[dict], label: str, reference: dict[str, Any]) -> None:
    mine = ranks[0][label]
    assert mine["local_fraction"] == (0.5 if label.startswith(("fsdp", "zero3")) else 1.0)
    assert mine["losses"] == ranks[1][label]["losses"]  # every rank reports the global loss
    assert mine["norms"] == ranks[1][label]["norms"]
    assert mine["losses"] == pytest.approx(reference["losses"], rel=LOSS_RTOL)
    assert mine["norms"] == pytest.approx(reference["norms"], rel=NORM_RTOL)
    assert max(reference["norms"]) > LOOP.grad_clip  # so clipping took part
    assert_weights_close(mine["final"], reference["final"])


def check_round_trip(ranks: list[dict], root: Path, label: str) -> None:
    mine = ranks[0][label]
    assert_weights_equal(mine["loaded"], mine["saved"])  # the fresh model had other weights
    # The resumed run continues exactly like the uninterrupted one (optimizer state and schedule restored).
    assert mine["resumed_losses"] == mine["losses"][SAVE_AT:]
    assert mine["resumed_norms"] == mine["norms"][SAVE_AT:]
    # One process, no group, reads the 2-rank checkpoint (what load_model_for_inference does).
    plain = build_model(ARGS)
    plain.to_empty(device="cpu")
    plain.tie_weights()
    load_model_weights(plain, root / label)
    assert_weights_equal({name: p.detach() for name, p in plain.named_parameters()}, mine["saved"])


@pytest.mark.parametrize("label", TORCH_RUNS)
def test_torch_strategy_trains_like_one_process(torch_launch, reference, label):
    check_equivalence(torch_launch[0], label, reference)


@pytest.mark.parametrize("label", ZERO_RUNS)
def test_zero_stage_trains_like_one_process(zero_launch, reference, label):
    check_equivalence(zero_launch[0], label, reference)


@pytest.mark.parametrize("label", ["fsdp", "fsdp+offload"])
def test_fsdp_checkpoint_round_trips_and_reshards_to_one_process(torch_launch, label):
    check_round_trip(*torch_launch, label)


@pytest.mark.parametrize("label", ZERO_RUNS)
def test_zero_checkpoint_round_trips_and_loads_in_one_process(zero_launch, label):
    check_round_trip(*zero_launch, label)
    assert (zero_launch[1] / label / "zero").is_dir()  # DeepSpeed's own format is there too


@pytest.mark.parametrize("load", MODEL_ONLY)
def test_model_only_load_takes_another_strategys_weights(zero_launch, load):
    ranks, _ = zero_launch
    source = load.split("<-")[1]
    entry = ranks[0][load]
    expected = ranks[0][source]["saved"]
    assert_weights_equal(entry["weights"], expected)
    if "master" in entry:
        assert_weights_equal(entry["master"], expected)
    # The first forward after the load sees the saved weights: the uninterrupted run's loss at that step.
    assert entry["losses"][0] == pytest.approx(ranks[0][source]["losses"][SAVE_AT], rel=1e-6)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (ParallelConfig(strategy="pipeline"), "parallel.strategy: got 'pipeline'"),
        (
            ParallelConfig(strategy="ddp", zero_offload_optimizer=True),
            "parallel.zero_offload_optimizer: only for",
        ),
    ],
)
def test_bad_strategy_config_fails_before_any_setup(options, message):
    model = build_model(ARGS)  # stays on meta: nothing was materialised
    with pytest.raises(ConfigError, match=message):
        parallelize(model, strategy=options, dist=DistInfo(), loop=LOOP, total_steps=10)
    assert model.output.weight.is_meta


def test_batch_not_divisible_by_ranks_fails_before_any_setup():
    loop = LoopConfig(global_batch_size=6, micro_batch_size=2)
    with pytest.raises(ConfigError, match="not a multiple of micro_batch_size x world_size = 4"):
        parallelize(
            build_model(ARGS), strategy="zero3", dist=DistInfo(world_size=2), loop=loop, total_steps=10
        )


@pytest.mark.parametrize("strategy", ["fsdp", "zero2"])
def test_sharded_strategies_need_a_process_group(strategy):
    # init_distributed(strategy=...) gives one process a group of one rank; with no group at all they refuse.
    with pytest.raises(ValueError, match=f"parallel.strategy {strategy} needs a process group"):
        build(strategy, DistInfo())


@pytest.mark.parametrize(
    ("optim_files", "message"),
    [
        (0, "has no ZeRO state"),
        (
            4,
            "holds ZeRO state of 4 ranks, and converting it to DeepSpeed's universal checkpoint for 2 failed",
        ),
    ],
)
def test_zero_resume_refuses_a_checkpoint_it_cannot_restore(tmp_path, optim_files, message):
    (tmp_path / TAG).mkdir()
    for rank in range(optim_files):
        (tmp_path / TAG / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt").touch()
    zero = object.__new__(DeepSpeedCheckpointer)  # the checks come before the engine is touched
    zero.dist = DistInfo(world_size=2)
    with pytest.raises((RuntimeError, FileNotFoundError), match=message):
        zero.load(tmp_path)
