"""The token loader: fixed windows over the memory-mapped shards of one split.

The shards of a split (in manifest order) form one flat token stream; each shard's
``input_ids`` values are mapped read-only, never copied (no ``combine_chunks``, which
copies). Sample ``i`` is the window ``[i*T, i*T + T + 1)`` of the stream, so windows
share one token: the last target of one is the first input of the next.

Training order: epoch ``e`` visits the windows in the permutation drawn by
``np.random.default_rng((seed, e))``; the global sample sequence runs through the epochs
one after another, and global sample ``g`` goes to rank ``g % world_size``. The state is
``(seed, epoch, sample_index)``, so resume is exact, also at another world size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import torch

from data_prep.tokenizer.manifest import load_manifest
from data_prep.tokenizer.shards import COLUMN

__all__ = ["TokenWindows", "TokenLoader", "eval_batches", "load_manifest", "unigram_perplexity"]

BINCOUNT_BLOCK = 1 << 24  # tokens per np.bincount call, bounding its int64 temporary


def split_chunks(shards_dir: str | Path, split: str) -> list[np.ndarray]:
    """Zero-copy, read-only views of the token buffers of every shard of ``split``."""
    manifest = load_manifest(shards_dir)
    chunks = []
    for shard in manifest["shards"]:
        if shard["split"] != split:
            continue
        reader = pa.ipc.open_stream(pa.memory_map(str(Path(shards_dir) / shard["path"]), "r"))
        for batch in reader:
            # flatten() honours a sliced list array, where .values would not.
            values = batch.column(COLUMN).flatten()
            if len(values):
                chunks.append(values.to_numpy(zero_copy_only=True))
    if not chunks:
        splits = sorted({shard["split"] for shard in manifest["shards"]})
        raise ValueError(f"no {split!r} tokens in {shards_dir} (splits there: {', '.join(splits) or 'none'})")
    return chunks


class TokenWindows:
    """Non-overlapping windows of ``seq_len + 1`` tokens (stride ``seq_len``) over one split."""

    def __init__(self, shards_dir: str | Path, split: str, seq_len: int):
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        self.shards_dir, self.split, self.seq_len = Path(shards_dir), split, seq_len
        self.chunks = split_chunks(shards_dir, split)
        self.starts = np.cumsum([0] + [len(chunk) for chunk in self.chunks])  # chunk c = stream[starts[c]:starts[c+1]]
        self.num_tokens = int(self.starts[-1])
        self.num_windows = max(0, (self.num_tokens - 1) // seq_len)
        if self.num_windows == 0:
            raise ValueError(f"the {split!r} split of {shards_dir} has {self.num_tokens} tokens, "
                             f"too few for one window of seq_len + 1 = {seq_len + 1}")

    def __len__(self) -> int:
        return self.num_windows

    def window(self, i: int) -> np.ndarray:
        """Tokens ``[i*T, i*T + T + 1)`` of the stream as int64, ``(seq_len + 1,)``; may span shards."""
        if not 0 <= i < self.num_windows:
            raise IndexError(f"window {i} out of range [0, {self.num_windows})")
        start, end = i * self.seq_len, i * self.seq_len + self.seq_len + 1
        c = int(np.searchsorted(self.starts, start, side="right")) - 1
        out = np.empty(end - start, dtype=np.int64)
        filled = 0
        while filled < len(out):
            offset = start + filled - int(self.starts[c])
            piece = self.chunks[c][offset:offset + len(out) - filled]
            out[filled:filled + len(piece)] = piece
            filled += len(piece)
            c += 1
        return out


def _batch(windows: TokenWindows, indices) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.from_numpy(np.stack([windows.window(int(i)) for i in indices]))  # [B, T+1]
    return rows[:, :-1].contiguous(), rows[:, 1:].contiguous()


class TokenLoader:
    """Infinite training batches ``(inputs [B, T], targets [B, T])``, int64, for one rank."""

    def __init__(self, shards_dir: str | Path, *, split: str = "train", seq_len: int, batch_size: int,
                 rank: int = 0, world_size: int = 1, seed: int = 0):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.windows = TokenWindows(shards_dir, split, seq_len)
        self.batch_size, self.rank, self.world_size, self.seed = batch_size, rank, world_size, seed
        self.sample_index = 0  # global: the next sample any rank has not consumed yet
        self._permutation_epoch = -1
        self._permutation = np.empty(0, dtype=np.int64)

    @property
    def epoch(self) -> int:
        return self.sample_index // self.windows.num_windows

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            step = self.batch_size * self.world_size
            mine = [g for g in range(self.sample_index, self.sample_index + step) if g % self.world_size == self.rank]
            batch = _batch(self.windows, [self._window_of(g) for g in mine])
            self.sample_index += step
            yield batch

    def _window_of(self, g: int) -> int:
        epoch, position = divmod(g, self.windows.num_windows)
        if epoch != self._permutation_epoch:
            self._permutation = np.random.default_rng((self.seed, epoch)).permutation(self.windows.num_windows)
            self._permutation_epoch = epoch
        return int(self._permutation[position])

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch, "sample_index": self.sample_index}

    def load_state_dict(self, state: dict) -> None:
        if state["sample_index"] // self.windows.num_windows != state["epoch"]:
            raise ValueError(f"loader state {state} does not fit the {self.windows.num_windows} windows of "
                             f"{self.windows.shards_dir} (were the shards or seq_len changed?)")
        self.seed, self.sample_index = int(state["seed"]), int(state["sample_index"])
        self._permutation_epoch = -1


def eval_batches(shards_dir: str | Path, *, split: str = "val", seq_len: int, batch_size: int,
                 rank: int = 0, world_size: int = 1, max_batches: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The windows of ``split`` in order, window ``i`` to rank ``i % world_size``; finite.

    The last ``num_windows % world_size`` windows are left out so that every rank yields
    the same number of batches of the same sizes (collectives stay matched).
    """
    windows = TokenWindows(shards_dir, split, seq_len)
    mine = np.arange(rank, windows.num_windows - windows.num_windows % world_size, world_size)
    for n, start in enumerate(range(0, len(mine), batch_size)):
        if max_batches and n == max_batches:
            return
        yield _batch(windows, mine[start:start + batch_size])


def unigram_perplexity(shards_dir: str | Path, *, train_split: str = "train", eval_split: str = "val") -> float:
    """exp(cross-entropy) of the eval tokens under the add-one smoothed train unigram distribution.

    The baseline any model must beat: it knows token frequencies and nothing else.
    """
    vocab_size = load_manifest(shards_dir)["tokenizer"]["vocab_size"]
    train_counts = _token_counts(split_chunks(shards_dir, train_split), vocab_size)
    eval_counts = _token_counts(split_chunks(shards_dir, eval_split), vocab_size)
    log_probs = np.log(train_counts + 1.0) - np.log(train_counts.sum() + vocab_size)
    return float(np.exp(-(eval_counts * log_probs).sum() / eval_counts.sum()))


def _token_counts(chunks: list[np.ndarray], vocab_size: int) -> np.ndarray:
    counts = np.zeros(vocab_size, dtype=np.int64)
    for chunk in chunks:
        for start in range(0, len(chunk), BINCOUNT_BLOCK):
            counts += np.bincount(chunk[start:start + BINCOUNT_BLOCK], minlength=vocab_size)
    return counts
