"""Optimizer parameter groups and the warmup + cosine schedule."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.job_config import LoopConfig, ModelConfig
from pipeline.model import ModelArgs, build_model
from pipeline.optim import build_optimizer, build_scheduler, lr_factor


def test_decay_only_on_matrices():
    model = build_model(ModelArgs.from_config(ModelConfig(size="tiny"), vocab_size=100), device="cpu")
    optimizer = build_optimizer(model, LoopConfig(weight_decay=0.1))
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    # every parameter exactly once (the tied head is the embedding)
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == model.num_params(non_embedding=False)


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
