"""Which source each global training sample comes from: a deterministic, stateless schedule.

The global sample sequence is cut into blocks of ``block_size`` samples. Every block holds
``counts[s]`` samples of source ``s`` (largest remainder of ``block_size * weight``), in an
order that is a seeded permutation per block. So sample ``g`` maps to (source, the how-many-th
sample of that source) from ``g`` alone: no state beyond the global sample index is needed to
resume, at any world size, and the share of each source is exact at every block boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep.tokenizer.manifest import MANIFEST_FILE, load_manifest
from pipeline.config.train import DataConfig
from pipeline.core.errors import ConfigError, InputError

__all__ = ["MixtureSchedule", "SourceSpec", "samples_for_tokens", "sources_from_config", "validation_sources"]

BLOCK_SIZE = 4096
MIX_STREAM = 0x6D6978  # seeds the block orders apart from the window permutations


@dataclass(frozen=True)
class SourceSpec:
    """One source of a mixture: the shards of ``shards`` whose manifest source is ``source`` ('' = all)."""

    name: str
    shards: str
    source: str = ""
    weight: float = 1.0


def sources_from_config(data: DataConfig) -> list[SourceSpec]:
    """The training sources of a data config; no ``sources`` means one source, every shard of ``shards``."""
    if not data.sources:
        return [SourceSpec(name="all", shards=data.shards)]
    return [
        SourceSpec(name=name, shards=spec.shards or data.shards, source=spec.source, weight=spec.weight)
        for name, spec in data.sources.items()
    ]


def validation_sources(data: DataConfig) -> list[SourceSpec]:
    """The sources validation reports on: a mixture's own, else one per manifest source of ``val_split``,
    so ``val/loss/<source>`` exists for a single-directory run too."""
    if data.sources:
        return sources_from_config(data)
    shards = load_manifest(data.shards)["shards"]
    names = sorted({shard["source"] for shard in shards if shard["split"] == data.val_split})
    if not names:
        raise InputError(f"{Path(data.shards) / MANIFEST_FILE}: no {data.val_split!r} shards to validate on")
    return [SourceSpec(name=name, shards=data.shards, source=name) for name in names]


def samples_for_tokens(tokens: int, seq_len: int) -> int:
    """Global samples that hold exactly ``tokens`` training targets (``seq_len`` per sample)."""
    if tokens <= 0 or tokens % seq_len:
        lower = tokens // seq_len * seq_len
        raise ConfigError(
            f"token budget {tokens} is not a positive multiple of seq_len {seq_len} "
            f"(nearest: {lower or seq_len} or {lower + seq_len})"
        )
    return tokens // seq_len


class MixtureSchedule:
    """Maps global sample indices to (source index, sample index within that source)."""

    def __init__(self, weights: list[float], *, seed: int, block_size: int = BLOCK_SIZE):
        if not weights or min(weights) <= 0:
            raise ConfigError(f"mixture weights must be > 0, got {weights}")
        self.seed, self.block_size = seed, block_size
        self.counts = largest_remainder(np.asarray(weights, dtype=np.float64), block_size)
        if (self.counts == 0).any():
            smallest = float(min(weights) / sum(weights))
            raise ConfigError(
                f"a mixture weight share of {smallest:.2e} rounds to 0 samples in a block of "
                f"{block_size}; raise it or drop that source"
            )
        self._cached = (
            -1,
            np.empty(0, dtype=np.int64),
            np.empty(0, dtype=np.int64),
        )  # one tuple: thread-safe swap

    def locate(self, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(source, index within source) of each global sample in ``g`` (int64 arrays)."""
        g = np.asarray(g, dtype=np.int64)
        source, local = np.empty_like(g), np.empty_like(g)
        blocks, positions = np.divmod(g, self.block_size)
        for block in np.unique(blocks):
            here = blocks == block
            order, within = self._block_order(int(block))
            source[here] = order[positions[here]]
            local[here] = block * self.counts[source[here]] + within[positions[here]]
        return source, local

    def samples_per_source(self, n: int) -> np.ndarray:
        """How many of the first ``n`` global samples each source supplied."""
        block, position = divmod(n, self.block_size)
        order, _ = self._block_order(block)
        return block * self.counts + np.bincount(order[:position], minlength=len(self.counts))

    def _block_order(self, block: int) -> tuple[np.ndarray, np.ndarray]:
        """The source of each position of ``block``, and its rank among that source's positions."""
        cached_block, order, within = self._cached
        if block != cached_block:
            order = np.repeat(np.arange(len(self.counts)), self.counts)
            np.random.default_rng((self.seed, MIX_STREAM, block)).shuffle(order)
            within = np.empty_like(order)
            for s in range(len(self.counts)):
                within[order == s] = np.arange(self.counts[s])
            self._cached = (block, order, within)
        return order, within


def largest_remainder(weights: np.ndarray, total: int) -> np.ndarray:
    """Integer shares of ``total`` proportional to ``weights``; ties go to the earlier source."""
    exact = weights / weights.sum() * total
    counts = np.floor(exact).astype(np.int64)
    by_remainder = np.argsort(-(exact - counts), kind="stable")
    counts[by_remainder[: total - counts.sum()]] += 1
    return counts


def source_label(spec: SourceSpec) -> str:
    """How errors name a source: ``name (dir, source filter)``."""
    where = str(Path(spec.shards)) + (f", source {spec.source!r}" if spec.source else "")
    return f"{spec.name} ({where})"
