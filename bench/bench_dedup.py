"""lmpipe's MinHash-LSH near-dedup on generated docs with planted near-duplicates.

Docs are 50-300 words drawn (Zipf-like) from a generated 20k-word vocabulary. Some
docs get a copy with words replaced at spaced positions so that the copy's word
5-gram Jaccard similarity to its original is about 0.95, 0.85, 0.7 or 0.5 (the true
value of each pair is measured on its shingle sets). Docs are shuffled and split into
4 tasks, each written as a filtered parquet shard the way ``data prep`` does. We time
the MinHash part of the keys stage (``TaskKeys`` with only MinHash on, over the tasks' shards)
and of the cluster stage (``plan_removals``), then compare the found (keeper, removed) pairs with the
planted pairs:
precision over all found pairs, recall per similarity bucket (the S-curve of 14
bands x 8 rows: ~0.92 expected at J=0.8). Anchor, when the ``datatrove`` package is
importable: its ``MinhashDedupSignature`` stage (same 5-grams, 14x8) over the same
docs in one task, signatures only.

Run: ``python bench/bench_dedup.py [--quick]``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from timing import median_seconds

from data_prep.config import DedupConfig
from data_prep.dedup.keys import TaskKeys, key_rows, keys_path
from data_prep.dedup.minhash import near_duplicate_labels
from data_prep.dedup.removal import plan_removals
from data_prep.document import Document
from data_prep.writers.parquet import ParquetWriter

TARGETS = (0.95, 0.85, 0.7, 0.5)
N_TASKS = 4
NGRAM = 5


def shingles(text: str) -> set[tuple[str, ...]]:
    words = text.lower().split()
    return {tuple(words[i : i + NGRAM]) for i in range(len(words) - NGRAM + 1)}


def near_copy(words: list[str], jaccard: float, rng: np.random.Generator, tag: str) -> str:
    """Replace k words 5 apart: each kills 5 shingles and adds 5, so J = (S - 5k) / (S + 5k)."""
    n_shingles = len(words) - NGRAM + 1
    k = max(1, round(n_shingles * (1 - jaccard) / (NGRAM * (1 + jaccard))))
    slots = rng.choice(len(words) // NGRAM, size=min(k, len(words) // NGRAM), replace=False)
    copy = list(words)
    for j, slot in enumerate(slots):
        copy[slot * NGRAM + NGRAM // 2] = f"new{tag}x{j}"
    return " ".join(copy)


def make_corpus(n_docs: int, pairs_per_target: int, seed: int = 0):
    """-> (docs in shuffled order, {(i, j): (target J, true J)} planted pairs with i < j)."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = np.array(["".join(rng.choice(letters, rng.integers(2, 10))) for _ in range(20_000)])
    weights = 1.0 / np.arange(1, len(vocab) + 1)
    n_base = n_docs - pairs_per_target * len(TARGETS)
    texts = [
        " ".join(vocab[rng.choice(len(vocab), rng.integers(50, 301), p=weights / weights.sum())])
        for _ in range(n_base)
    ]
    planted_at: list[tuple[int, int, float, float]] = []
    for t, target in enumerate(TARGETS):
        for p in range(pairs_per_target):
            original = t * pairs_per_target + p
            copy = near_copy(texts[original].split(), target, rng, f"{t}y{p}")
            a, b = shingles(texts[original]), shingles(copy)
            planted_at.append((original, len(texts), target, len(a & b) / len(a | b)))
            texts.append(copy)
    order = rng.permutation(len(texts))
    position = np.empty_like(order)
    position[order] = np.arange(len(order))
    docs = [Document(id=f"d{i}", text=texts[i], source="cc") for i in order]
    planted = {
        tuple(sorted((int(position[i]), int(position[j])))): (target, true)
        for i, j, target, true in planted_at
    }
    return docs, planted


def datatrove_anchor(docs: list[Document], work: Path):
    """A callable running datatrove's signature stage, or the reason there is none."""
    try:
        from datatrove.data import Document as DtDocument
        from datatrove.pipeline.dedup.minhash import (
            MinhashConfig,
            MinhashDedupSignature,
        )
    except ImportError as exc:
        return f"datatrove not importable ({exc}); pip install datatrove to compare"
    dt_docs = [DtDocument(text=d.text, id=d.id) for d in docs]

    def run() -> int:
        stage = MinhashDedupSignature(output_folder=str(work / "datatrove"), config=MinhashConfig())
        for _ in stage.run(iter(dt_docs), rank=0, world_size=1):
            pass
        return len(dt_docs)

    try:
        run()
    except ImportError as exc:  # its word tokenizers need spacy or nltk
        return f"datatrove's signature stage failed: {type(exc).__name__}: {str(exc)[:100]}"
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k docs instead of 100k")
    args = parser.parse_args()
    n_docs, pairs = (10_000, 250) if args.quick else (100_000, 1_000)
    dedup = DedupConfig(exact=False, url=False)
    cfg = dedup.minhash
    docs, planted = make_corpus(n_docs, pairs)
    tasks = {
        f"{t:05d}": list(chunk)
        for t, chunk in enumerate(np.array_split(np.array(docs, dtype=object), N_TASKS))
    }
    with tempfile.TemporaryDirectory(prefix="bench_dedup_") as tmp:
        work = Path(tmp)
        shards = {
            task: ParquetWriter(work / "filtered", task, len(docs)).write(task_docs)
            for task, task_docs in tasks.items()
        }
        sizes = [len(task_docs) for task_docs in tasks.values()]

        def signatures() -> int:
            for task, paths in shards.items():
                keys = TaskKeys(dedup)
                for path in paths:
                    keys.add(pq.read_table(path))
                keys.save(work / "keys", task)
            return len(docs)

        anchor = datatrove_anchor(docs, work)
        fns = {"signatures": signatures}
        if callable(anchor):
            fns["datatrove"] = anchor
        seconds, _ = median_seconds(fns, reps=1 if not args.quick else 3)

        def cluster() -> dict:
            return plan_removals(work, work / "keys", list(tasks), sizes, dedup)

        cluster_seconds, _ = median_seconds(
            {"cluster": lambda: cluster()["docs"]}, reps=1 if not args.quick else 3
        )
        summary = cluster()
        labels = near_duplicate_labels(
            [np.load(keys_path(work / "keys", task))[key_rows(dedup)["bands"]] for task in tasks],
            cfg.num_bands,
        )
    removed = np.flatnonzero(labels != np.arange(len(labels)))
    found = {(int(labels[g]), int(g)) for g in removed}
    true_positive = found & planted.keys()

    print(f"\n{'minhash 14x8, 5-grams':<24} {'docs':>8} {'seconds':>8} {'docs/s':>9}")
    print(
        f"{'signatures (4 tasks)':<24} {len(docs):>8,} {seconds['signatures']:>8.2f} "
        f"{len(docs) / seconds['signatures']:>9,.0f}"
    )
    print(
        f"{'cluster (all tasks)':<24} {len(docs):>8,} {cluster_seconds['cluster']:>8.2f} "
        f"{len(docs) / cluster_seconds['cluster']:>9,.0f}"
    )
    if callable(anchor):
        rate = len(docs) / seconds["datatrove"]
        print(
            f"{'datatrove signatures':<24} {len(docs):>8,} {seconds['datatrove']:>8.2f} {rate:>9,.0f}   "
            f"ours/anchor {seconds['datatrove'] / seconds['signatures']:.2f}x"
        )
    else:
        print(f"anchor not compared: {anchor}")
    print(
        f"\nclusters {summary['clusters']:,}, removed {summary['removed']['near_duplicate']:,}; "
        f"found pairs {len(found):,}, "
        f"planted {len(planted):,}, precision {len(true_positive) / max(len(found), 1):.3f}"
    )
    print(f"{'planted J':>10} {'mean true J':>12} {'pairs':>6} {'recall':>7} {'S-curve':>8}")
    for target in TARGETS:
        bucket = [pair for pair, (t, _) in planted.items() if t == target]
        true_j = np.mean([planted[p][1] for p in bucket])
        recall = sum(p in found for p in bucket) / len(bucket)
        print(
            f"{target:>10.2f} {true_j:>12.3f} {len(bucket):>6} {recall:>7.3f} {cfg.probability(true_j):>8.3f}"
        )
    high = [p for p, (_, j) in planted.items() if j >= 0.8]
    print(
        f"recall at true J >= 0.8: {sum(p in found for p in high) / len(high):.3f} (target >= 0.9); "
        f"{'median of 3 after a warm-up' if args.quick else 'one run after a warm-up'}"
    )


if __name__ == "__main__":
    main()
