"""lmpipe's TokenLoader vs a raw numpy read of the same windows, in tokens per second.

Setup (not timed): ``--size-gb`` of uint16 token shards with random ids, written by the real
``ShardWriter`` (256 MB shards) with a manifest, plus the same token stream as one flat
``tokens.bin``. Ours: ``TokenLoader`` with seq_len 2048 and batch 8 over the whole split,
with the prefetch thread on and off: the permutation lookup, window copy into one [B, T+1]
int64 buffer per batch, the two tensor views, the queue. Anchor: the same windows in the same
order copied from ``np.memmap(tokens.bin)`` into a [B, T+1] int64 array, nothing else, so the
ratio says what the loader costs beyond the one copy every loader must make. One torch thread;
the prefetch thread shares the process. RSS is sampled during each run: anonymous memory
(RssAnon, what a leak or a copy of the shards would grow) separately from file-backed pages
(RssFile, the mapped shards in the page cache, which may grow to the data size).

Run: ``python bench/bench_loader.py [--size-gb 1.0] [--quick]`` (quick: 0.2 GB).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from data_prep.tokenizer.manifest import build_manifest, write_manifest
from data_prep.tokenizer.shards import SHARDS_SUBDIR, ShardWriter
from pipeline.train.data import TokenLoader

SEQ_LEN, BATCH, VOCAB = 2048, 8, 50_000
SHARD_BYTES = 256 << 20
DOC_TOKENS = (100, 4000)  # document lengths drawn uniformly from this range
WRITE_BLOCK = 16 << 20  # tokens generated per ShardWriter.add call
RSS_EVERY = 256  # batches between RSS samples


def write_corpus(root: Path, size_gb: float) -> int:
    """Shards + manifest + flat tokens.bin of ``size_gb`` GB of uint16 tokens; returns the token count."""
    rng = np.random.default_rng(0)
    total = int(size_gb * 1e9) // 2
    (root / SHARDS_SUBDIR).mkdir(parents=True)
    writer = ShardWriter(
        root, split="train", source="bench", task=0, dtype=np.uint16, shard_size_bytes=SHARD_BYTES
    )
    written = 0
    with open(root / "tokens.bin", "wb") as flat:
        while written < total:
            tokens = rng.integers(0, VOCAB, min(WRITE_BLOCK, total - written), dtype=np.uint16)
            lengths = rng.integers(*DOC_TOKENS, len(tokens) // DOC_TOKENS[0] + 1)
            lengths = lengths[: int(np.searchsorted(np.cumsum(lengths), len(tokens))) + 1]
            lengths[-1] = len(tokens) - lengths[:-1].sum()
            writer.add(tokens, lengths)
            tokens.tofile(flat)
            written += len(tokens)
    tokenizer = {"path": "tokenizer.json", "sha256": "", "vocab_size": VOCAB, "eos_id": 0}
    write_manifest(
        root,
        build_manifest(
            tokenizer=tokenizer, dtype="uint16", shards=writer.close(), config={}, command="bench_loader"
        ),
    )
    return written


def rss_kib() -> tuple[int, int]:
    """(RssAnon, RssFile) of this process in KiB."""
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    return int(fields["RssAnon"].split()[0]), int(fields["RssFile"].split()[0])


def timed(batches, num_batches: int) -> dict:
    """Consume ``num_batches`` from ``batches`` (touching each so nothing is lazily skipped)."""
    anon, files = [], []
    checksum = 0
    start = time.perf_counter()
    for n in range(num_batches):
        inputs, targets = next(batches)
        checksum += int(inputs[0, 0]) + int(targets[-1, -1])
        if n % RSS_EVERY == 0:
            a, f = rss_kib()
            anon.append(a)
            files.append(f)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "samples/s": num_batches * BATCH / seconds,
        "tokens/s": num_batches * BATCH * SEQ_LEN / seconds,
        "anon_mib": (min(anon) / 1024, max(anon) / 1024),
        "file_mib": (min(files) / 1024, max(files) / 1024),
        "checksum": checksum,
    }


def anchor_batches(root: Path, order: np.ndarray):
    """Raw numpy: the windows of ``order`` from a memmap of the flat stream, one int64 array per batch."""
    stream = np.memmap(root / "tokens.bin", dtype=np.uint16, mode="r")
    for start in range(0, len(order), BATCH):
        rows = np.empty((BATCH, SEQ_LEN + 1), dtype=np.int64)
        for r, i in enumerate(order[start : start + BATCH].tolist()):
            rows[r] = stream[i * SEQ_LEN : i * SEQ_LEN + SEQ_LEN + 1]
        tensor = torch.from_numpy(rows)
        yield tensor[:, :-1], tensor[:, 1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-gb", type=float, default=1.0)
    parser.add_argument("--quick", action="store_true", help="0.2 GB")
    args = parser.parse_args()
    size_gb = 0.2 if args.quick else args.size_gb
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="lmpipe-bench-loader-"))
    try:
        tokens = write_corpus(root, size_gb)
        num_windows = (tokens - 1) // SEQ_LEN
        num_batches = num_windows // BATCH
        print(
            f"{tokens * 2 / 1e9:.2f} GB of uint16 shards, {num_windows} windows of {SEQ_LEN + 1}, "
            f"{num_batches} batches of {BATCH} (one epoch), 1 torch thread"
        )
        order = np.random.default_rng((0, 0)).permutation(num_windows)  # the loader's epoch-0 order, seed 0
        results = {}
        for name, make in [
            ("anchor numpy memmap", lambda: anchor_batches(root, order)),
            (
                "lmpipe prefetch=0",
                lambda: iter(TokenLoader(root, seq_len=SEQ_LEN, batch_size=BATCH, prefetch=0)),
            ),
            (
                "lmpipe prefetch=2",
                lambda: iter(TokenLoader(root, seq_len=SEQ_LEN, batch_size=BATCH, prefetch=2)),
            ),
        ]:
            timed(make(), min(num_batches, 512))  # warm the page cache and the code paths
            results[name] = timed(make(), num_batches)
        assert len({r["checksum"] for r in results.values()}) == 1, (
            "the loader and the anchor read different windows"
        )
        anchor = results["anchor numpy memmap"]["tokens/s"]
        for name, r in results.items():
            print(
                f"{name:22s} {r['samples/s']:10.0f} samples/s {r['tokens/s'] / 1e6:8.1f} M tokens/s  "
                f"ratio {r['tokens/s'] / anchor:5.2f}  "
                f"RssAnon {r['anon_mib'][0]:.0f}->{r['anon_mib'][1]:.0f} MiB  "
                f"RssFile {r['file_mib'][0]:.0f}->{r['file_mib'][1]:.0f} MiB  ({r['seconds']:.1f} s)"
            )
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
