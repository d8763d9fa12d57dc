"""The token loader: fixed windows over the memory-mapped shards of one or more sources.

The shards of a source (one split of a tokenize output, optionally only one manifest
``source``, in manifest order) form one flat token stream; each shard's ``input_ids``
values are mapped read-only, never copied (no ``combine_chunks``, which copies). Sample
``i`` of a source is the window ``[i*T, i*T + T + 1)`` of its stream, so windows share one
token: the last target of one is the first input of the next.

Training order: ``mixture.MixtureSchedule`` maps global sample ``g`` to (source, k-th sample
of that source); the k-th sample of a source with ``N`` windows is position ``k % N`` of
epoch ``k // N``, whose permutation is drawn by ``np.random.default_rng((seed, epoch))``
(a mixture adds the source index: ``(seed, epoch, s)``). A small source thus repeats
(its epoch count is its repeats) while a big one does not. Global sample ``g`` goes to
rank ``g % world_size``. The state is ``(seed, sample_index)`` (per-source epochs follow),
so resume is exact, also at another world size. The same order gives ``seen_subset(n)``: the windows
of the first ``n`` global samples, data every run of this seed has trained on (``data.train_eval_windows``).
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import torch

from data_prep.arrays import integers
from data_prep.tokenizer.manifest import MANIFEST_FILE, load_manifest
from data_prep.tokenizer.shards import COLUMN
from pipeline.core.errors import InputError, MissingInputError, ResumeError
from pipeline.core.files import file_sha256
from pipeline.model.loss import IGNORE_INDEX
from pipeline.train.mixture import BLOCK_SIZE, MixtureSchedule, SourceSpec, largest_remainder, source_label
from pipeline.train.windows import TokenWindows, read_shard, split_chunks

Batch = tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, list[np.ndarray]]
"""(inputs, targets), or with ``doc_starts`` (inputs,
targets, per row the positions where a document starts)."""

__all__ = ["TokenLoader", "ValBatch", "ValidationSet", "unigram_perplexity", "verify_shards"]

BINCOUNT_BLOCK = 1 << 24  # tokens per np.bincount call, bounding its int64 temporary
PREFETCH_POLL_S = 0.1  # how often a blocked prefetch thread looks for a stop request


class TokenLoader:
    """Infinite training batches ``(inputs [B, T], targets [B, T])``, int64, for one rank.

    Give ``shards_dir`` (one source: every shard of ``split``) or ``sources`` (a mixture).
    With ``doc_starts`` each batch has a third item: per row, ``TokenWindows.doc_starts``.
    ``prefetch`` batches are built ahead by one thread; ``state_dict()`` still counts only
    the batches handed out. ``pin_memory`` (for CUDA: ``cuda.pin_batches``) builds them in pinned memory
    in that thread, so the loop's ``non_blocking`` copy to the device is asynchronous.
    """

    def __init__(
        self,
        shards_dir: str | Path | None = None,
        *,
        sources: Sequence[SourceSpec] = (),
        split: str = "train",
        seq_len: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        prefetch: int = 2,
        doc_starts: bool = False,
        block_size: int = BLOCK_SIZE,
        unique_windows: int = 0,
        pin_memory: bool = False,
    ):
        """``unique_windows`` > 0: train on only that many distinct windows (``data.unique_tokens``),
        shared out over the sources by weight, each source's chosen by the seed."""
        if (shards_dir is None) == (not sources):
            raise ValueError("give either shards_dir or sources")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.sources = list(sources) or [SourceSpec(name="all", shards=str(shards_dir))]
        self.windows = [_source_windows(spec, split, seq_len) for spec in self.sources]
        if unique_windows:
            shares = largest_remainder(np.array([spec.weight for spec in self.sources]), unique_windows)
            for windows, share in zip(self.windows, shares.tolist()):
                windows.keep_only(max(1, share), seed)
        self.split, self.seq_len, self.block_size = split, seq_len, block_size
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.prefetch, self.with_doc_starts, self.pin_memory = prefetch, doc_starts, pin_memory
        limited = {"unique_windows": unique_windows} if unique_windows else {}  # old fingerprints stay valid
        self.fingerprint = _fingerprint(
            self.sources, self.windows, split=split, seq_len=seq_len, block_size=block_size, **limited
        )
        self._reseed(seed)
        self.sample_index = 0  # global: the next sample no rank has consumed yet

    @property
    def epoch(self) -> int:
        """The largest per-source epoch (the epoch, with one source)."""
        return max(self.source_epochs().values())

    def source_epochs(self, sample_index: int | None = None) -> dict[str, int]:
        """The epoch each source is in once ``sample_index``
        (default: the consumed) global samples are drawn."""
        drawn = self.schedule.samples_per_source(self.sample_index if sample_index is None else sample_index)
        return {spec.name: int(n // w.num_windows) for spec, n, w in zip(self.sources, drawn, self.windows)}

    def mixture_report(self, sample_index: int | None = None) -> dict[str, dict]:
        """Per source, over the first ``sample_index`` global samples (default: consumed ones): samples,
        training tokens (``seq_len`` each), windows it has, epochs (fractional passes) and repeats
        (passes begun after the first), for logging and the mixture record of a run."""
        drawn = self.schedule.samples_per_source(self.sample_index if sample_index is None else sample_index)
        report = {}
        for spec, n, windows in zip(self.sources, drawn.tolist(), self.windows):
            report[spec.name] = {
                "samples": n,
                "tokens": n * self.seq_len,
                "windows": windows.num_windows,
                "weight": spec.weight,
                "epochs": n / windows.num_windows,
                "repeats": max(0, -(-n // windows.num_windows) - 1),
            }
        return report

    def __iter__(self) -> Iterator[Batch]:
        step = self.batch_size * self.world_size
        if not self.prefetch:
            while True:
                batch = self.batch_at(self.sample_index)
                self.sample_index += step
                yield batch
        prefetcher, seed = None, self.seed
        try:
            while True:
                if prefetcher is None or (prefetcher.next_index, seed) != (self.sample_index, self.seed):
                    if prefetcher is not None:  # a state was loaded: what was built ahead is stale
                        prefetcher.close()
                    prefetcher = _Prefetcher(
                        self.batch_at, start=self.sample_index, step=step, depth=self.prefetch
                    )
                    seed = self.seed
                batch = prefetcher.get()
                self.sample_index += step
                yield batch
        finally:
            if prefetcher is not None:
                prefetcher.close()

    def batch_at(self, sample_index: int) -> Batch:
        """This rank's batch of the step that starts at global sample ``sample_index``."""
        ws = self.world_size
        first = sample_index + (self.rank - sample_index) % ws
        g = np.arange(first, sample_index + self.batch_size * ws, ws, dtype=np.int64)
        source, indices = self.window_indices(g)
        rows = np.empty((len(g), self.seq_len + 1), dtype=np.int64)
        starts: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * len(g)
        for s in np.unique(source).tolist():
            here = np.flatnonzero(source == s)
            windows = self.windows[s]
            sub = np.empty((len(here), self.seq_len + 1), dtype=np.int64)
            windows.fill(sub, indices[here])
            rows[here] = sub
            if self.with_doc_starts:
                for row, i in zip(here.tolist(), indices[here].tolist()):
                    starts[row] = windows.doc_starts(i)
        tensor = torch.from_numpy(rows).pin_memory() if self.pin_memory else torch.from_numpy(rows)
        inputs, targets = tensor[:, :-1], tensor[:, 1:]  # views of one buffer: no second copy
        return (inputs, targets, starts) if self.with_doc_starts else (inputs, targets)

    def window_indices(self, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(source, window of that source) of each global sample in ``g``: the training order itself."""
        source, local = self.schedule.locate(g)
        indices = np.empty_like(local)
        for s in np.unique(source).tolist():
            here = np.flatnonzero(source == s)
            epochs, positions = np.divmod(local[here], self.windows[s].num_windows)
            for epoch in np.unique(epochs).tolist():
                same = epochs == epoch
                indices[here[same]] = self._permutation(s, epoch)[positions[same]]
        return source, indices

    def seen_subset(self, samples: int) -> ValidationSet:
        """The windows of global samples ``[0, samples)``, per source: what every run of this seed and
        data has trained on once it took ``samples`` samples, whatever its world size or batch size."""
        source, indices = self.window_indices(np.arange(samples, dtype=np.int64))
        return ValidationSet(
            {spec.name: windows for spec, windows in zip(self.sources, self.windows)},
            {spec.name: indices[source == s] for s, spec in enumerate(self.sources)},
            seq_len=self.seq_len,
        )

    def _permutation(self, s: int, epoch: int) -> np.ndarray:
        seed = self.seed  # read once: a state load on another thread may change it
        cached = self._permutations.get(s)
        if cached is not None and (cached[0], cached[1]) == (seed, epoch):
            return cached[2]
        key = (seed, epoch) if len(self.sources) == 1 else (seed, epoch, s)
        permutation = np.random.default_rng(key).permutation(self.windows[s].num_windows)
        self._permutations[s] = (seed, epoch, permutation)  # one tuple: safe to read from another thread
        return permutation

    def _reseed(self, seed: int) -> None:
        self.seed = seed
        self.schedule = MixtureSchedule(
            [spec.weight for spec in self.sources], seed=seed, block_size=self.block_size
        )
        self._permutations: dict[int, tuple[int, int, np.ndarray]] = {}

    def state_dict(self) -> dict:
        return {
            "seed": self.seed,
            "epoch": self.epoch,
            "sample_index": self.sample_index,
            "source_epochs": self.source_epochs(),
            "fingerprint": self.fingerprint,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue after the last consumed sample of ``state``; refuses state of other data or seq_len."""
        if state.get("fingerprint", self.fingerprint) != self.fingerprint:
            raise ResumeError(
                f"loader state was saved for other data (fingerprint {state['fingerprint']}; these "
                f"sources/shards/seq_len/weights give {self.fingerprint})"
            )
        seed, sample_index = int(state["seed"]), int(state["sample_index"])
        schedule = MixtureSchedule(
            [spec.weight for spec in self.sources], seed=seed, block_size=self.block_size
        )
        drawn = schedule.samples_per_source(sample_index)
        if max(n // w.num_windows for n, w in zip(drawn.tolist(), self.windows)) != state["epoch"]:
            raise ResumeError(
                f"loader state {state} does not fit the {self.windows[0].num_windows} windows of "
                f"{self.windows[0].shards_dir} (were the shards or seq_len changed?)"
            )
        self._reseed(seed)
        self.sample_index = sample_index


def _source_windows(spec: SourceSpec, split: str, seq_len: int) -> TokenWindows:
    try:
        return TokenWindows(spec.shards, split, seq_len, source=spec.source)
    except ValueError as exc:
        raise InputError(f"source {source_label(spec)}: {exc}") from None


def _fingerprint(sources: list[SourceSpec], windows: list[TokenWindows], **settings) -> str:
    """A short hash of everything that fixes the sample order except the seed."""
    described = [
        {
            "name": spec.name,
            "source": spec.source,
            "weight": spec.weight,
            "windows": w.num_windows,
            "shards": [entry["sha256"] for entry in w.entries],
        }
        for spec, w in zip(sources, windows)
    ]
    return hashlib.sha256(json.dumps([described, settings], sort_keys=True).encode()).hexdigest()[:16]


class _Prefetcher:
    """One thread building the batches at ``start, start + step, ...`` into a queue of ``depth``."""

    def __init__(self, make_batch, *, start: int, step: int, depth: int):
        self.next_index, self.step = start, step
        self._queue: queue.Queue = queue.Queue(depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(make_batch, start), daemon=True, name="token-prefetch"
        )
        self._thread.start()

    def get(self) -> Batch:
        ok, item = self._queue.get()
        if not ok:
            raise item
        self.next_index += self.step
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self, make_batch, index: int) -> None:
        while not self._stop.is_set():
            try:
                item = (True, make_batch(index))
            except Exception as exc:  # noqa: BLE001 - handed to the consumer, which raises it
                item = (False, exc)
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=PREFETCH_POLL_S)
                    break
                except queue.Full:
                    continue
            if not item[0]:
                return
            index += self.step


class ValBatch(NamedTuple):
    source: str
    inputs: torch.Tensor  # [B, T]
    targets: torch.Tensor  # [B, T]; IGNORE_INDEX on padding rows


class ValidationSet:
    """A fixed set of windows per source, whose loss depends on neither the world size nor the batch size,
    so it compares across runs and sweeps: validation's (``from_sources``), or the training windows a run
    has seen (``TokenLoader.seen_subset``).

    ``batches()`` deals each source's windows out round-robin; ranks left one short get a padding
    row (inputs 0, targets IGNORE_INDEX), so every window counts exactly once while every rank runs
    the same number of equally shaped batches (collectives stay matched).
    """

    def __init__(self, windows: dict[str, TokenWindows], indices: dict[str, np.ndarray], *, seq_len: int):
        self.windows, self.indices, self.seq_len = windows, indices, seq_len

    @classmethod
    def from_sources(
        cls,
        sources: Sequence[SourceSpec],
        *,
        split: str = "val",
        seq_len: int,
        windows_per_source: int | None,
    ) -> ValidationSet:
        """Per source, ``windows_per_source`` evenly spaced windows of its ``split`` (all of them when it
        has fewer; ``None``: all of them)."""
        if windows_per_source is not None and windows_per_source < 1:
            raise ValueError(f"windows_per_source must be >= 1, got {windows_per_source}")
        windows = {spec.name: _source_windows(spec, split, seq_len) for spec in sources}
        indices = {
            name: evenly_spaced(w.num_windows, windows_per_source or w.num_windows)
            for name, w in windows.items()
        }
        return cls(windows, indices, seq_len=seq_len)

    def tokens(self) -> dict[str, int]:
        """Target tokens each source contributes to a full pass (the weights of an overall val loss)."""
        return {name: len(indices) * self.seq_len for name, indices in self.indices.items()}

    def batches(self, *, batch_size: int, rank: int = 0, world_size: int = 1) -> Iterator[ValBatch]:
        """This rank's batches, source by source (a batch holds one source only)."""
        for name, indices in self.indices.items():
            mine = indices[rank::world_size]
            rows = -(-len(indices) // world_size)  # every rank: as many as the first
            for start in range(0, rows, batch_size):
                chosen = mine[start : start + batch_size]
                count = min(batch_size, rows - start)
                buffer = np.zeros((count, self.seq_len + 1), dtype=np.int64)
                self.windows[name].fill(buffer, chosen)
                tensor = torch.from_numpy(buffer)
                inputs, targets = tensor[:, :-1], tensor[:, 1:]
                if len(chosen) < count:  # padding: the targets need memory of their own, inputs stay 0
                    targets = targets.clone()
                    targets[len(chosen) :] = IGNORE_INDEX
                yield ValBatch(name, inputs, targets)


def evenly_spaced(num_windows: int, n: int) -> np.ndarray:
    """``n`` window indices spread evenly over ``num_windows`` (all of them when ``n`` is not fewer)."""
    return np.arange(num_windows) if n >= num_windows else np.arange(n, dtype=np.int64) * num_windows // n


def unigram_perplexity(
    shards_dir: str | Path, *, train_split: str = "train", eval_split: str = "val"
) -> float:
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
            counts += np.bincount(chunk[start : start + BINCOUNT_BLOCK], minlength=vocab_size)
    return counts


def verify_shards(
    shards_dir: str | Path,
    *,
    tokenizer_path: str | Path | None = None,
    vocab_size: int | None = None,
    check_sha: bool = True,
) -> dict:
    """Check a tokenize output before training; every problem is a one-line error naming the file.

    Checks: the manifest and every shard it lists exist; each shard is a complete Arrow stream whose
    token dtype is the manifest's and whose docs/tokens match its entry; its sha256 matches (read in
    8 MB blocks; ``check_sha=False`` skips it on huge corpora); the tokenizer at ``tokenizer_path`` is
    the one the shards were made with; the dtype holds the vocabulary; no token id reaches
    ``vocab_size`` (the model's; default the tokenizer's). Returns ``{"shards", "docs", "tokens"}``.
    """
    shards_dir = Path(shards_dir)
    manifest = load_manifest(shards_dir)  # names a shard file that is missing
    manifest_path = shards_dir / MANIFEST_FILE
    tokenizer = manifest["tokenizer"]
    if tokenizer_path is not None:
        path = Path(tokenizer_path)
        path = path / tokenizer["path"] if path.is_dir() else path
        if not path.is_file():
            raise MissingInputError(f"tokenizer not found: {path}")
        if (sha256 := file_sha256(path)) != tokenizer["sha256"]:
            raise InputError(
                f"tokenizer {path} differs from the one {manifest_path} was made with "
                f"(sha256 {sha256[:12]} vs {tokenizer['sha256'][:12]})"
            )
    dtype = np.dtype(manifest["dtype"])
    limit = vocab_size or tokenizer["vocab_size"]
    needed = max(limit, tokenizer["vocab_size"])
    if needed > np.iinfo(dtype).max + 1:
        raise InputError(f"{manifest_path}: dtype {dtype} cannot hold the ids of a vocabulary of {needed}")
    docs = tokens = 0
    for entry in manifest["shards"]:
        path = shards_dir / entry["path"]
        batches = read_shard(path)
        found = [batch.schema.field(COLUMN).type for batch in batches[:1]]
        if found and found[0] != pa.list_(pa.from_numpy_dtype(dtype)):
            raise InputError(f"{path}: column {COLUMN} is {found[0]}, but {manifest_path} says {dtype}")
        shard_docs = sum(batch.num_rows for batch in batches)
        values = [integers(batch.column(COLUMN).flatten()) for batch in batches]
        shard_tokens = sum(len(v) for v in values)
        if (shard_docs, shard_tokens) != (entry["docs"], entry["tokens"]):
            raise InputError(
                f"{path}: holds {shard_docs} docs / {shard_tokens} tokens, "
                f"but {manifest_path} says {entry['docs']} / {entry['tokens']}"
            )
        top = max((int(v.max()) for v in values if len(v)), default=-1)
        if top >= limit:
            raise InputError(f"{path}: token id {top} is >= the vocabulary size {limit}")
        if check_sha and file_sha256(path) != entry["sha256"]:
            raise InputError(f"{path}: sha256 differs from {manifest_path} (file changed or corrupt)")
        docs, tokens = docs + shard_docs, tokens + shard_tokens
    return {"shards": len(manifest["shards"]), "docs": docs, "tokens": tokens}
