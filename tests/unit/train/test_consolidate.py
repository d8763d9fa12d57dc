"""``checkpoint consolidate``: a checkpoint's weights as one plain safetensors file that loads to the same
model."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from pipeline.cli.main import main
from pipeline.config.model import ModelConfig
from pipeline.config.train import LoopConfig, TrainJobConfig
from pipeline.model.args import ModelArgs
from pipeline.model.transformer import build_model
from pipeline.parallel.dist import DistInfo
from pipeline.parallel.registry import parallelize
from pipeline.testing import run_distributed_test
from pipeline.train.checkpoint import consolidate, load_consolidated, save_checkpoint
from pipeline.train.loop import train_step

ZERO_ARGS = ModelConfig(size="tiny", seq_len=32).args(vocab_size=101)


def trained_checkpoint(
    args: ModelArgs, out, tokenizer, *, strategy: str = "ddp", dist: DistInfo | None = None
):
    """Two training steps of a fresh model (each rank its half of the batch), checkpointed."""
    dist = dist or DistInfo()
    torch.manual_seed(0)
    parallel = parallelize(
        build_model(args),
        strategy=strategy,
        dist=dist,
        loop=LoopConfig(warmup_steps=1, global_batch_size=4, micro_batch_size=4 // dist.world_size),
        total_steps=4,
    )
    for seed in range(2):
        tokens = torch.randint(0, args.vocab_size, (4, 33), generator=torch.Generator().manual_seed(seed))
        mine = tokens.chunk(dist.world_size)[dist.rank]
        train_step(parallel, [(mine[:, :-1], mine[:, 1:])], dist=dist)
    save_checkpoint(
        out,
        parallel=parallel,
        dist=dist,
        step=2,
        tokens_seen=256,
        config=TrainJobConfig(),
        model_args=args,
        tokenizer_file=tokenizer,
        loader_state={},
        mlflow_run_id=None,
        seed=0,
        keep=1,
    )
    return parallel.model


def zero2_rank(out: str, tokenizer: str) -> torch.Tensor:
    """On each of 2 ranks: train and checkpoint under zero2; the logits of a fixed batch."""
    from pipeline.parallel.dist import init_distributed

    model = trained_checkpoint(ZERO_ARGS, out, tokenizer, strategy="zero2", dist=init_distributed())
    with torch.no_grad():
        return model.eval()(probe(ZERO_ARGS)).float()


def probe(args: ModelArgs) -> torch.Tensor:
    return torch.randint(0, args.vocab_size, (2, 32), generator=torch.Generator().manual_seed(9))


@pytest.mark.parametrize("tied", [True, False])
def test_consolidated_file_loads_to_identical_logits(tmp_path, tiny_corpus, tied):
    args = ModelConfig(size="tiny", seq_len=32, tie_embeddings=tied).args(vocab_size=101)
    model = trained_checkpoint(args, tmp_path / "run", tiny_corpus[0] / "tokenizer.json")
    output = tmp_path / "export" / "model.safetensors"
    assert main(["checkpoint", "consolidate", str(tmp_path / "run"), "--output", str(output)]) == 0

    with safe_open(str(output), framework="pt") as f:
        keys = set(f.keys())
    expected_keys = set(model.state_dict()) - ({"output.weight"} if tied else set())
    assert keys == expected_keys
    sidecar = json.loads(output.with_suffix(".json").read_text())
    assert ModelArgs(**sidecar["model"]) == args and sidecar["step"] == 2 and sidecar["strategy"] == "ddp"

    loaded = load_consolidated(output)
    assert (loaded.output.weight is loaded.tok_embeddings.weight) == tied
    with torch.no_grad():
        assert torch.equal(loaded(probe(args)), model.eval()(probe(args)))


@pytest.mark.slow
@pytest.mark.distributed
def test_a_zero2_checkpoint_of_two_ranks_consolidates_in_one_process(tmp_path, tiny_corpus):
    logits = run_distributed_test(
        zero2_rank,
        world_size=2,
        timeout_s=300,
        out=str(tmp_path / "run"),
        tokenizer=str(tiny_corpus[0] / "tokenizer.json"),
    )[0]
    loaded = load_consolidated(consolidate(tmp_path / "run", tmp_path / "model.safetensors"))
    with torch.no_grad():
        assert torch.equal(loaded(probe(ZERO_ARGS)), logits)


def test_consolidate_refuses_another_suffix(tmp_path):
    with pytest.raises(ValueError, match="must end in .safetensors"):
        consolidate(tmp_path, tmp_path / "model.bin")
