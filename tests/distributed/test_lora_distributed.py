"""LoRA fine-tunes on a real 2-rank gloo group, under each strategy that takes them, train like one process.

One launch runs every strategy in turn (process start-up and DeepSpeed's import paid once); the
reference is a 1-process ddp LoRA fine-tune of the same global batch. Each writes its checkpoints,
which this process then reads as eval/export do (merged), so the check covers what each strategy saves.
Tolerances: losses rtol 1e-5 (ZeRO-2/3 reduce LoRA's small gradients in buckets, in another order than
one process sums them; measured 1.4e-6 and 5.1e-6 after 6 steps, DDP 7e-7), merged weights per tensor
||w - w_ref|| / ||w_ref|| <= 1e-4, as tests/distributed/test_strategies.py measured for full training.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import torch

from pipeline.config.finetune import FinetuneJobConfig
from pipeline.config.train import TrainJobConfig
from pipeline.finetune.run import finetune
from pipeline.testing import run_distributed_test
from pipeline.train.checkpoint import load_model_for_inference, read_meta, resolve_checkpoint

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

STRATEGIES = ["ddp", "fsdp", "zero1", "zero2", "zero3"]
LOSS_RTOL, WEIGHT_RTOL = 1e-4, 1e-4


def config(init_from: Path, sft: Path, output_dir: Path, strategy: str, *overrides: str) -> FinetuneJobConfig:
    return FinetuneJobConfig.load(
        None,
        [
            f"init_from={init_from}",
            f"output_dir={output_dir}",
            f"data.path={sft}",
            "data.val_fraction=0.1",
            "train.max_steps=6",
            "train.global_batch_size=8",
            "train.micro_batch_size=2",
            "train.warmup_steps=2",
            "train.lr=1e-2",
            "train.eval_batches=2",
            "train.log_interval=3",
            "checkpoint.interval=3",
            "lora.rank=4",
            "lora.targets=[wq,wv,w2]",
            f"parallel.strategy={strategy}",
            "tracking.enabled=false",
            *overrides,
        ],
    )


def finetune_each(init_from: str, sft: str, root: str, strategies: list[str]) -> dict[str, dict[str, Any]]:
    """On every rank: one LoRA fine-tune per strategy, into ``root/<strategy>``."""
    return {
        strategy: asdict(finetune(config(Path(init_from), Path(sft), Path(root) / strategy, strategy)))
        for strategy in strategies
    }


def resume_one(init_from: str, sft: str, output_dir: str, strategy: str, step_dir: str) -> dict[str, Any]:
    return asdict(
        finetune(
            config(Path(init_from), Path(sft), Path(output_dir), strategy, f"checkpoint.resume={step_dir}")
        )
    )


@pytest.fixture(scope="module")
def pretrained(tiny_corpus, tmp_path_factory) -> Path:
    from pipeline.train.pretrain import train

    out = tmp_path_factory.mktemp("pretrained")
    train(
        TrainJobConfig.load(
            None,
            [
                f"data.shards={tiny_corpus[0]}",
                f"output_dir={out}",
                "model.size=tiny",
                "model.seq_len=64",
                "train.global_batch_size=8",
                "train.micro_batch_size=4",
                "train.max_steps=10",
                "train.warmup_steps=2",
                "train.eval_interval=0",
                "data.val_windows=8",
                "tracking.enabled=false",
            ],
        )
    )
    return out


@pytest.fixture(scope="module")
def reference(pretrained, tiny_corpus, tmp_path_factory) -> dict[str, Any]:
    return finetune_each(str(pretrained), str(tiny_corpus[1]), str(tmp_path_factory.mktemp("one")), ["ddp"])[
        "ddp"
    ]


@pytest.fixture(scope="module")
def launch(pretrained, tiny_corpus, tmp_path_factory) -> list[dict[str, dict[str, Any]]]:
    return run_distributed_test(
        finetune_each,
        world_size=2,
        timeout_s=300,
        init_from=str(pretrained),
        sft=str(tiny_corpus[1]),
        root=str(tmp_path_factory.mktemp("two")),
        strategies=STRATEGIES,
    )


def merged_weights(checkpoint: str) -> dict[str, torch.Tensor]:
    model, _, _ = load_model_for_inference(checkpoint)
    return {name: p.detach() for name, p in model.named_parameters()}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_lora_finetune_on_two_ranks_trains_like_one_process(launch, reference, pretrained, strategy):
    mine, other = launch[0][strategy], launch[1][strategy]
    assert (mine["world_size"], mine["strategy"]) == (2, strategy)
    for key in ("first_train_loss", "last_train_loss", "initial_val_loss", "final_val_loss"):
        assert mine[key] == other[key]  # every rank reports the global loss
    for key in ("first_train_loss", "last_train_loss"):
        assert mine[key] == pytest.approx(reference[key], rel=LOSS_RTOL), key
    # Validation on 2 ranks leaves out an odd last row (sft_eval_batches): compare it among 2-rank runs.
    for key in ("initial_val_loss", "final_val_loss"):
        assert mine[key] == pytest.approx(launch[0]["ddp"][key], rel=LOSS_RTOL), key
    assert mine["last_train_loss"] < mine["first_train_loss"]

    meta = read_meta(mine["checkpoint"])
    assert meta["strategy"] == strategy and meta["lora"]["targets"] == ["wq", "wv", "w2"]
    ours, theirs = merged_weights(mine["checkpoint"]), merged_weights(reference["checkpoint"])
    base = merged_weights(str(resolve_checkpoint(pretrained)))
    assert sorted(ours) == sorted(theirs) == sorted(base)
    for name, tensor in theirs.items():
        error = float((ours[name] - tensor).norm() / tensor.norm())
        assert error <= WEIGHT_RTOL, f"{name}: relative error {error:.2e}"
        adapted = name.endswith(("wq.weight", "wv.weight", "w2.weight"))
        # the frozen weights come back bit for bit; the adapted ones moved (their adapters trained)
        assert torch.equal(ours[name], base[name]) != adapted, name


@pytest.mark.parametrize("strategy", ["zero2", "zero3"])
def test_lora_zero_checkpoint_resumes_in_one_process(launch, pretrained, tiny_corpus, tmp_path, strategy):
    """Another world size resumes ZeRO state through DeepSpeed's universal checkpoint, which restores only
    what its optimizer holds: the frozen base weights must come back too, or the curve jumps."""
    step_3 = Path(launch[0][strategy]["checkpoint"]).parent / "step_3"
    # A process of its own: DeepSpeed keeps its groups in globals, stale after another engine's group is gone.
    (resumed,) = run_distributed_test(
        resume_one,
        world_size=1,
        timeout_s=300,
        init_from=str(pretrained),
        sft=str(tiny_corpus[1]),
        output_dir=str(tmp_path / "resumed"),
        strategy=strategy,
        step_dir=str(step_3),
    )
    assert resumed["last_train_loss"] == pytest.approx(launch[0][strategy]["last_train_loss"], rel=LOSS_RTOL)
