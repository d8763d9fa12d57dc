"""Optimizer parameter groups, the fused AdamW kernel, and the warmup + cosine schedule."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from pipeline.config.model import ModelConfig
from pipeline.config.train import LoopConfig
from pipeline.model.transformer import build_model
from pipeline.parallel.optim import build_optimizer, build_scheduler, lr_factor, param_groups, use_fused

ARGS = ModelConfig(size="tiny", seq_len=16).args(vocab_size=100)


def test_decay_only_on_matrices():
    model = build_model(ARGS, device="cpu")
    optimizer = build_optimizer(model, LoopConfig(weight_decay=0.1))
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    # every parameter exactly once (the tied head is the embedding)
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == model.num_params(
        non_embedding=False
    )


def test_fused_adamw_on_the_cpu_steps_like_the_default_path():
    """The fused kernel is chosen on the CPU and, given the same gradients, makes the same updates as
    torch's default AdamW there."""
    models = [build_model(ARGS, device="cpu") for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    cfg = LoopConfig(lr=1e-2, weight_decay=0.1)
    fused = build_optimizer(models[0], cfg)
    default = torch.optim.AdamW(
        param_groups(models[1], cfg.weight_decay), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2)
    )
    assert fused.defaults["fused"] and not default.defaults["fused"]
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        for p_fused, p_default in zip(models[0].parameters(), models[1].parameters()):
            p_fused.grad = torch.randn(p_fused.shape, generator=generator)
            p_default.grad = p_fused.grad.clone()
        fused.step()
        default.step()
    for (name, p_fused), p_default in zip(models[0].named_parameters(), models[1].parameters()):
        torch.testing.assert_close(p_fused, p_default, rtol=1e-6, atol=1e-7, msg=name)


def test_fused_only_where_torch_has_the_kernel():
    cpu, meta = (build_model(ARGS, device=device).tok_embeddings.weight for device in ("cpu", "meta"))
    cuda = SimpleNamespace(
        device=torch.device("cuda", 0)
    )  # stands in for a CUDA tensor on a machine without one
    assert use_fused([cpu]) and use_fused([cuda]) and not use_fused([cpu, meta])


def test_schedule_values():
    factor = lambda step: lr_factor(step, warmup_steps=10, total_steps=110, min_lr_ratio=0.1)  # noqa: E731
    assert factor(0) == pytest.approx(0.1)
    assert factor(4) == pytest.approx(0.5)
    assert factor(9) == pytest.approx(1.0)
    assert factor(10) == pytest.approx(1.0)
    assert factor(60) == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the cosine
    assert factor(110) == pytest.approx(0.1)
    assert factor(500) == pytest.approx(0.1)
    values = [factor(s) for s in range(10, 111)]
    assert values == sorted(values, reverse=True)
    assert lr_factor(0, warmup_steps=0, total_steps=5, min_lr_ratio=0.0) == pytest.approx(1.0)


def test_scheduler_drives_the_optimizer():
    param = torch.nn.Parameter(torch.zeros(2, 2))
    optimizer = torch.optim.AdamW([param], lr=2.0)
    scheduler = build_scheduler(optimizer, LoopConfig(warmup_steps=4, min_lr_ratio=0.0), total_steps=8)
    seen = []
    for _ in range(8):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen[:4] == pytest.approx([0.5, 1.0, 1.5, 2.0])
    assert seen[6] == pytest.approx(2.0 * 0.5 * (1 + math.cos(math.pi * 2 / 4)))
