"""LoRA's settings (rank, alpha, dropout, targets): torch-free, so a bad target fails before torch loads."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.core.config import Config, require

LORA_TARGETS = ("wq", "wk", "wv", "wo", "w1", "w2", "w3")
"""The Linear projections inside a transformer block (``transformer.Attention``'s wq/wk/wv/wo,
``transformer.FeedForward``'s w1 gate, w3 up, w2 down); spelled out here so a bad name fails before torch
is imported."""


@dataclass
class LoRAConfig(Config):
    """Low-rank adapters (``pipeline.lora``): the pretrained weights stay frozen and only
    ``B @ A`` (rank ``rank``) beside each targeted projection trains; merged into the weights on export."""

    rank: int = 0
    """Rank r of each adapter; 0: no LoRA, every weight trains."""
    alpha: float = 16.0
    """The adapter's output is scaled by alpha / rank (so changing the rank needs no new lr)."""
    dropout: float = 0.0
    """Dropout on the adapters' input while training. Above 0 it draws random numbers that checkpoints do not
    keep: a resumed run then continues the same statistics, not the same losses."""
    targets: list[str] = field(default_factory=lambda: ["wq", "wk", "wv", "wo"])
    """Which projections of every block get adapters (``LORA_TARGETS``); default the attention's."""

    def check(self, prefix: str) -> None:
        require(self.rank >= 0, f"{prefix}rank", f"must be >= 0 (0: no LoRA), not {self.rank}")
        require(self.alpha > 0, f"{prefix}alpha", "must be > 0")
        require(0.0 <= self.dropout < 1.0, f"{prefix}dropout", "must be in [0, 1)")
        unknown = [name for name in self.targets if name not in LORA_TARGETS]
        require(
            not unknown,
            f"{prefix}targets",
            f"unknown projection {', '.join(map(repr, unknown))}; valid: {', '.join(LORA_TARGETS)}",
        )
        require(bool(self.targets), f"{prefix}targets", f"name at least one of {', '.join(LORA_TARGETS)}")
        require(len(set(self.targets)) == len(self.targets), f"{prefix}targets", "names a projection twice")

    @property
    def enabled(self) -> bool:
        return self.rank > 0
