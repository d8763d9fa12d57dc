"""LoRA (Hu et al., 2021): fine-tune low-rank adapters beside frozen pretrained weights.

A targeted projection ``W x`` becomes ``W x + (alpha / rank) B A x`` with A (rank, in) and B (out, rank)
the only trained tensors. A starts kaiming-uniform and B at zero (as ``peft`` does), so at step 0 the
model computes exactly what the pretrained one does, and the optimizer holds state for a fraction of
the parameters.

The order of operations follows the model's (``transformer.py``): ``apply_lora`` swaps the projections of a
model built on the meta device, before a strategy places it; the strategy draws base weights and
adapters alike, each from a generator seeded by its name (``model.init``), the same on every rank.
``LoRALinear`` is an ``nn.Linear`` whose frozen weight keeps its name, so a LoRA checkpoint holds the
plain model's keys plus ``<projection>.lora_A`` / ``.lora_B``, and its ``meta.json`` says so
(``"lora"``). Whatever reads weights out of a checkpoint
(``parallel_base.load_model_weights``: eval, generate, export, consolidate, ``--init-from``) folds the
adapters in with ``merged_state_dict``: the result has exactly a plain model's keys.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.core.errors import ConfigError
from pipeline.core.files import META_FILE
from pipeline.model.lora_config import LORA_TARGETS, LoRAConfig
from pipeline.model.transformer import Block, Transformer

ADAPTER_NAMES = ("lora_A", "lora_B")
"""The parameter names a ``LoRALinear`` adds to its ``weight``."""
META_KEY = "lora"
"""Where a checkpoint's meta.json records its adapters (``checkpoint.save_checkpoint``)."""


class LoRALinear(nn.Linear):
    """``y = x W^T + scale * dropout(x) A^T B^T``, W frozen; no bias (the model has none)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        rank: int,
        alpha: float,
        dropout: float,
        device: torch.device | str | None = None,
    ):
        super().__init__(in_features, out_features, bias=False, device=device)
        self.weight.requires_grad_(False)
        self.rank, self.alpha, self.dropout = rank, alpha, dropout
        self.scale = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, in_features, device=device))  # (r, in)
        self.lora_B = nn.Parameter(torch.empty(out_features, rank, device=device))  # (out, r)
        # No module at all without dropout: even p=0 would make the training forward a dropout call.
        self.lora_dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.reset_adapter()

    @classmethod
    def around(cls, linear: nn.Linear, cfg: LoRAConfig) -> LoRALinear:
        """Adapters around ``linear``'s own weight tensor (kept, frozen), on its device (meta before init)."""
        if linear.bias is not None:
            raise ValueError("LoRALinear adapts bias-free projections only")
        adapted = cls(
            linear.in_features,
            linear.out_features,
            rank=cfg.rank,
            alpha=cfg.alpha,
            dropout=cfg.dropout,
            device=linear.weight.device,
        )
        adapted.weight = linear.weight
        adapted.weight.requires_grad_(False)
        return adapted

    @torch.no_grad()
    def reset_adapter(self) -> None:
        """A kaiming-uniform as ``peft`` (and ``nn.Linear``) draws it, B zero: the update starts at exactly
        0."""
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = F.linear(F.linear(self.lora_dropout(x), self.lora_A), self.lora_B)  # (..., r) -> (..., out)
        return F.linear(x, self.weight) + update * self.scale

    @torch.no_grad()
    def merged_weight(self) -> torch.Tensor:
        """``W + scale * B A``: one matrix that computes what the adapted projection does (dropout off)."""
        return self.weight + self.scale * (self.lora_B @ self.lora_A)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, alpha={self.alpha}, dropout={self.dropout}"


def apply_lora(model: Transformer, cfg: LoRAConfig) -> Transformer:
    """Put adapters on the ``cfg.targets`` projections of every block and freeze every other parameter
    (embeddings, norms, untargeted projections); in place, and returns ``model``. Call it on the
    meta-built model, before ``parallel.parallelize``, so every strategy wraps or shards the adapted model."""
    model.requires_grad_(False)
    found = set()
    for block in model.layers:
        block = cast(Block, block)  # ModuleList items are typed as any Module
        for parent in (block.attention, block.feed_forward):
            for name, child in list(parent.named_children()):
                if name in cfg.targets:
                    setattr(parent, name, LoRALinear.around(cast(nn.Linear, child), cfg))
                    found.add(name)
    missing = sorted(set(cfg.targets) - found)
    if missing:
        raise ConfigError(f"lora.targets: the model's blocks have no projection {', '.join(missing)}")
    return model


def is_adapter(name: str) -> bool:
    """Whether a parameter or state-dict key is an adapter's (``...wq.lora_A``) rather than a model weight."""
    return name.rsplit(".", 1)[-1] in ADAPTER_NAMES


def adapter_config(model: nn.Module) -> LoRAConfig | None:
    """The adapters a model carries, as a config (what a checkpoint's meta records); None: a plain model."""
    adapted = [
        (name.rsplit(".", 1)[-1], module)
        for name, module in model.named_modules()
        if isinstance(module, LoRALinear)
    ]
    if not adapted:
        return None
    first = adapted[0][1]
    targets = [name for name in LORA_TARGETS if name in {name for name, _ in adapted}]
    return LoRAConfig(rank=first.rank, alpha=first.alpha, dropout=first.dropout, targets=targets)


def saved_adapters(step_dir: str | Path) -> LoRAConfig | None:
    """The adapters a checkpoint's weights carry (its meta.json's ``lora``); None for plain weights, or a
    directory without meta.json (bare DCP state)."""
    meta = Path(step_dir) / META_FILE
    if not meta.is_file():
        return None
    saved = json.loads(meta.read_text()).get(META_KEY)
    return LoRAConfig.from_dict(saved) if saved else None


@torch.no_grad()
def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s state dict with every adapter folded into its weight (``merged_weight``): the keys of
    the plain model, so every loader of plain weights takes it."""
    state = model.state_dict()
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            state[f"{name}.weight"] = module.merged_weight()
            for adapter in ADAPTER_NAMES:
                del state[f"{name}.{adapter}"]
    return state


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters; count on the meta-built model, before ZeRO-3 partitions it (a tied head
    is counted once)."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
