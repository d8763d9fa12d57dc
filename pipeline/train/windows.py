"""Token windows: the shards of one split (of one source) as one memory-mapped token stream.

The shards' ``input_ids`` values are mapped read-only, never copied (no ``combine_chunks``, which
copies). Window ``i`` is ``[i*T, i*T + T + 1)`` of the stream, so windows share one token: the last
target of one is the first input of the next. ``data.TokenLoader`` and ``data.ValidationSet`` draw
from these.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from data_prep.arrays import integers
from data_prep.tokenizer.manifest import load_manifest
from data_prep.tokenizer.shards import COLUMN
from pipeline.core.errors import InputError


def read_shard(path: Path) -> list[pa.RecordBatch]:
    """The record batches of one mapped shard; a damaged file is named (pyarrow's errors do not)."""
    try:
        return list(pa.ipc.open_stream(pa.memory_map(str(path), "r")))
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{path}: not a complete Arrow IPC stream, truncated or damaged? ({exc})") from None


def select_shards(shards_dir: str | Path, split: str, source: str = "") -> list[dict]:
    """The manifest entries of ``split`` (and of ``source``, unless empty), in manifest order."""
    manifest = load_manifest(shards_dir)
    chosen = [s for s in manifest["shards"] if s["split"] == split and (not source or s["source"] == source)]
    if not chosen:
        have = sorted({f"{s['split']}/{s['source']}" for s in manifest["shards"]})
        wanted = f"{split!r}" + (f" source {source!r}" if source else "")
        raise InputError(
            f"no {wanted} tokens in {shards_dir} (split/source there: {', '.join(have) or 'none'})"
        )
    return chosen


def split_chunks(shards_dir: str | Path, split: str, source: str = "") -> list[np.ndarray]:
    """Zero-copy, read-only views of the token buffers of every selected shard."""
    return [values for values, _ in mapped_chunks(shards_dir, select_shards(shards_dir, split, source))]


def mapped_chunks(shards_dir: str | Path, entries: list[dict]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(token values, list offsets) of every non-empty record batch, both views into the mapped files."""
    chunks = []
    for entry in entries:
        for batch in read_shard(Path(shards_dir) / entry["path"]):
            column = batch.column(COLUMN)
            values = column.flatten()  # flatten() honours a sliced list array, where .values would not
            if len(values):
                chunks.append((integers(values), integers(column.offsets)))
    return chunks


UNIQUE_SUBSET_TAG = 0x756E6971
"""Mixed into the seed of ``TokenWindows.keep_only``, so the subset is not the first epoch's order."""


class TokenWindows:
    """Non-overlapping windows of ``seq_len + 1`` tokens
    (stride ``seq_len``) over one split (of one source)."""

    def __init__(self, shards_dir: str | Path, split: str, seq_len: int, *, source: str = ""):
        if seq_len < 1:
            raise InputError(f"seq_len must be >= 1, got {seq_len}")
        self.shards_dir, self.split, self.source, self.seq_len = Path(shards_dir), split, source, seq_len
        self.entries = select_shards(shards_dir, split, source)
        mapped = mapped_chunks(shards_dir, self.entries)
        self.chunks = [values for values, _ in mapped]
        self.offsets = [offsets for _, offsets in mapped]  # document starts, for boundary masks
        self.starts = np.cumsum(
            [0] + [len(chunk) for chunk in self.chunks]
        )  # chunk c = stream[starts[c]:starts[c+1]]
        self.num_tokens = int(self.starts[-1])
        self.num_windows = max(0, (self.num_tokens - 1) // seq_len)
        if self.num_windows == 0:
            what = f"the {split!r} split" + (f" (source {source!r})" if source else "")
            raise InputError(
                f"{what} of {shards_dir} has {self.num_tokens} tokens, "
                f"too few for one window of seq_len + 1 = {seq_len + 1}"
            )

    subset: np.ndarray | None = None
    """With ``keep_only``: the stream windows kept, sorted; window ``i`` is stream window ``subset[i]``."""

    def keep_only(self, count: int, seed: int) -> None:
        """Keep ``count`` windows, the first of a permutation seeded by ``seed``, renumbered 0..count-1: the
        unique data of a data-constrained run (``data.unique_tokens``), which the loader's epochs then
        repeat. A random subset rather than the first windows, so it samples every part of the split."""
        if 0 < count < self.num_windows:
            chosen = np.random.default_rng([seed, UNIQUE_SUBSET_TAG]).permutation(self.num_windows)[:count]
            self.subset, self.num_windows = np.sort(chosen), count

    def _stream(self, indices: np.ndarray) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        return indices if self.subset is None else self.subset[indices]

    def __len__(self) -> int:
        return self.num_windows

    def window(self, i: int) -> np.ndarray:
        """Tokens ``[i*T, i*T + T + 1)`` of the stream as int64, ``(seq_len + 1,)``; may span shards."""
        if not 0 <= i < self.num_windows:
            raise IndexError(f"window {i} out of range [0, {self.num_windows})")
        out = np.empty((1, self.seq_len + 1), dtype=np.int64)
        self.fill(out, np.array([i]))
        return out[0]

    def fill(self, out: np.ndarray, indices: np.ndarray) -> None:
        """Copy window ``indices[r]`` into row ``r`` of ``out`` ([len(indices), T+1] int64): the one copy."""
        width = self.seq_len + 1
        starts = self._stream(indices) * self.seq_len
        first = np.searchsorted(self.starts, starts, side="right") - 1
        for row, (start, c) in enumerate(zip(starts.tolist(), first.tolist())):
            offset = start - int(self.starts[c])
            chunk = self.chunks[c]
            if offset + width <= len(chunk):
                out[row] = chunk[offset : offset + width]
                continue
            filled = 0
            while filled < width:  # the window spans shards
                piece = self.chunks[c][offset : offset + width - filled]
                out[row, filled : filled + len(piece)] = piece
                filled += len(piece)
                c, offset = c + 1, 0

    def doc_starts(self, i: int) -> np.ndarray:
        """Input positions ``p`` in ``[0, T)`` of window ``i`` where a document begins (int64, sorted)."""
        i = int(self._stream(np.array([i]))[0])
        lo, hi = i * self.seq_len, i * self.seq_len + self.seq_len
        found = []
        c = int(np.searchsorted(self.starts, lo, side="right")) - 1
        while c < len(self.chunks) and self.starts[c] < hi:
            offsets = self.offsets[c][:-1]  # absolute into the shard's values buffer: rebase on the first
            base = int(self.starts[c]) - int(offsets[0])
            a, b = np.searchsorted(offsets, [lo - base, hi - base], side="left")
            found.append(offsets[a:b].astype(np.int64) + (base - lo))
            c += 1
        return np.concatenate(found)
