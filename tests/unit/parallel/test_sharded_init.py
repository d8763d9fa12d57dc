"""Per-parameter initial weights (``parallel.init``): the rules of ``init_weights``, seeded by name.

The sharded layouts (FSDP2, tensor parallel) are checked against these on real gloo ranks in
tests/distributed/test_sharded_init.py.
"""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.config.model import ModelConfig
from pipeline.model.init import full_parameter, parameter_seed
from pipeline.model.lora import apply_lora
from pipeline.model.lora_config import LoRAConfig
from pipeline.model.transformer import build_model, rope_tables
from pipeline.parallel.init import init_on_cpu, materialize_and_init

ARGS = ModelConfig(size="tiny", seq_len=32).args(vocab_size=101)
SEED = 1234


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_init_on_cpu_is_the_sharded_scheme_on_one_whole_model():
    torch.manual_seed(SEED)  # init_on_cpu takes the seed the caller gave torch.manual_seed
    plain = weights(init_on_cpu(build_model(ARGS)))
    direct = weights(materialize_and_init(build_model(ARGS), device="cpu", seed=SEED))
    assert plain.keys() == direct.keys()
    for name in plain:
        assert torch.equal(plain[name], direct[name]), name


def test_each_parameter_is_its_own_full_draw():
    """What a rank's shard is cut from: the parameter's full tensor, whatever else the model holds."""
    model = materialize_and_init(build_model(ARGS), device="cpu", seed=SEED)
    for name, param in model.named_parameters():
        expected = full_parameter(name, param.shape, seed=SEED, n_layers=ARGS.n_layers)
        assert torch.equal(param.detach(), expected), name


def test_same_seed_same_weights_other_seed_other_weights():
    first = weights(materialize_and_init(build_model(ARGS), device="cpu", seed=SEED))
    again = weights(materialize_and_init(build_model(ARGS), device="cpu", seed=SEED))
    other = weights(materialize_and_init(build_model(ARGS), device="cpu", seed=SEED + 1))
    for name in first:
        assert torch.equal(first[name], again[name]), name
        if not name.endswith("norm.weight"):  # ones, whatever the seed
            assert not torch.equal(first[name], other[name]), name
    assert parameter_seed(SEED, "a") != parameter_seed(SEED, "b") != parameter_seed(SEED + 1, "b")


def test_init_weights_rules_hold():
    model = materialize_and_init(build_model(ARGS), device="cpu", seed=SEED)
    residual_std = 0.02 / math.sqrt(2 * ARGS.n_layers)
    for name, param in model.named_parameters():
        if name.endswith("norm.weight"):
            assert torch.equal(param, torch.ones_like(param)), name
            continue
        std = residual_std if name.endswith(("wo.weight", "w2.weight")) else 0.02
        assert param.mean().abs() < 4 * std / math.sqrt(param.numel()), name
        assert param.std().item() == pytest.approx(std, rel=0.05), name
    assert model.output.weight is model.tok_embeddings.weight  # the head stays tied
    cos, sin = rope_tables(ARGS)
    assert torch.equal(model.rope_cos, cos) and torch.equal(model.rope_sin, sin)


def test_lora_adapters_follow_reset_adapter_and_leave_the_base_weights_alone():
    """Seeds by name: adding adapters changes no base weight (a draw in module order would shift them)."""
    base = weights(materialize_and_init(build_model(ARGS), device="cpu", seed=SEED))
    cfg = LoRAConfig(rank=4, targets=["wq", "w2"])
    adapted = materialize_and_init(apply_lora(build_model(ARGS), cfg), device="cpu", seed=SEED)
    for name, param in adapted.named_parameters():
        if name.endswith("lora_B"):
            assert torch.equal(param, torch.zeros_like(param)), name
        elif name.endswith("lora_A"):
            bound = 1 / math.sqrt(param.shape[1])  # kaiming-uniform, a = sqrt(5): U(-1/sqrt(in), 1/sqrt(in))
            assert param.abs().max() <= bound and param.abs().max() > 0.9 * bound, name
            assert param.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1), name
        else:
            assert torch.equal(param, base[name]), name
            assert not param.requires_grad  # apply_lora's freezing survives the init


def test_initialised_model_trains():
    model = materialize_and_init(build_model(ARGS), device="cpu", seed=SEED)
    tokens = torch.randint(0, ARGS.vocab_size, (2, 17), generator=torch.Generator().manual_seed(0))
    _, loss = model(tokens[:, :-1], tokens[:, 1:])
    assert abs(loss.item() - math.log(ARGS.vocab_size)) < 0.1  # near-uniform predictions at init
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
