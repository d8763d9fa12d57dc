"""MinHash-LSH near-dedup: planted near-duplicates found, unrelated docs left, same answer whatever the split."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data_prep.dedup.minhash import (
    MinHashConfig,
    MinHashDedupFilter,
    cluster,
    compute_signatures,
    minhash_signatures,
    removal_path,
)
from data_prep.document import Document
from data_prep.writers.parquet import ParquetWriter
from pipeline.config import ConfigError

CFG = MinHashConfig()
REPO = Path(__file__).resolve().parents[3]


def random_text(rng: np.random.Generator, n_words: int) -> str:
    return " ".join(f"word{i}" for i in rng.integers(0, 50_000, n_words))


def with_changes(text: str, every: int) -> str:
    """Replace every ``every``-th word: 200 words, every 40 -> J(5-grams) = 171/221 = 0.77."""
    words = text.split()
    return " ".join("changed" if i % every == 0 else w for i, w in enumerate(words))


@pytest.fixture(scope="module")
def corpus() -> list[Document]:
    """20 unrelated docs, then: near-duplicates of 0 and 3 (J ~ 0.9), an exact (re-cased) copy of 5,
    a copy of 0's near-duplicate (a 3-member cluster), and 5 more unrelated docs."""
    rng = np.random.default_rng(0)
    texts = [random_text(rng, 200) for _ in range(20)]
    texts += [with_changes(texts[0], 80), with_changes(texts[3], 80), texts[5].upper() + " !!",
              with_changes(texts[0], 80)]
    texts += [random_text(rng, 200) for _ in range(5)]
    return [Document(id=f"doc{i:03d}", text=t, source="cc") for i, t in enumerate(texts)]


EXPECTED_REMOVED = {"doc020", "doc021", "doc022", "doc023"}


def removed_ids(docs: list[Document], dedup_dir: Path, n_tasks: int) -> set[str]:
    chunks = np.array_split(np.arange(len(docs)), n_tasks)
    tasks = {f"{t:05d}": [docs[i] for i in chunk] for t, chunk in enumerate(chunks)}
    for task, task_docs in tasks.items():
        compute_signatures(task_docs, CFG, dedup_dir, task)
    cluster(dedup_dir, CFG)
    removed = set()
    for task, task_docs in tasks.items():
        keep = MinHashDedupFilter.for_task(dedup_dir, task)
        kept = {d.id for d in keep.run(task_docs)}
        removed |= {d.id for d in task_docs} - kept
        assert keep.stats.dropped.get("near_duplicate", 0) == len(np.load(removal_path(dedup_dir, task)))
    return removed


def test_planted_near_and_exact_duplicates_are_removed_and_unrelated_kept(corpus, tmp_path):
    assert removed_ids(corpus, tmp_path, 1) == EXPECTED_REMOVED


def test_same_removal_set_for_one_or_three_tasks(corpus, tmp_path):
    assert removed_ids(corpus, tmp_path / "three", 3) == removed_ids(corpus, tmp_path / "one", 1)


def test_keeper_is_the_lowest_task_and_index(corpus, tmp_path):
    # Put the near-duplicate first: now it is kept and the original goes.
    removed = removed_ids([corpus[20], *corpus[:20]], tmp_path, 2)
    assert "doc000" in removed and "doc020" not in removed


def test_signature_similarity_tracks_jaccard():
    rng = np.random.default_rng(1)
    base = random_text(rng, 200)
    sigs = minhash_signatures([base, with_changes(base, 40), random_text(rng, 200)], CFG)
    assert abs((sigs[0] == sigs[1]).mean() - 171 / 221) < 0.15
    assert (sigs[0] == sigs[2]).mean() < 0.05


def test_empty_and_punctuation_only_docs_share_the_empty_signature():
    sigs = minhash_signatures(["", " ?! ", "Hi!", "hi"], CFG)
    assert (sigs[0] == np.uint32(0xFFFFFFFF)).all() and (sigs[0] == sigs[1]).all()
    assert (sigs[2] == sigs[3]).all() and not (sigs[2] == sigs[0]).any()


def test_parquet_input_gives_the_same_signatures_as_documents(corpus, tmp_path):
    paths = ParquetWriter(tmp_path / "docs", "00000", docs_per_shard=10).write(corpus)
    from_files = np.load(compute_signatures(paths, CFG, tmp_path / "a", "00000"))
    from_docs = np.load(compute_signatures(corpus, CFG, tmp_path / "b", "00000"))
    assert from_files.shape == (CFG.num_bands, len(corpus)) and (from_files == from_docs).all()


def test_signatures_do_not_depend_on_pythonhashseed(corpus):
    code = ("import sys, numpy as np; from data_prep.dedup.minhash import MinHashConfig, minhash_signatures; "
            "texts = sys.stdin.read().split('\\x00'); sys.stdout.write(minhash_signatures(texts, MinHashConfig()).tobytes().hex())")
    texts = "\x00".join(d.text for d in corpus[:5])
    outputs = {subprocess.run([sys.executable, "-c", code], input=texts, capture_output=True, text=True, check=True,
                              cwd=REPO, env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert outputs == {minhash_signatures(texts.split("\x00"), CFG).tobytes().hex()}


def test_filter_drops_exactly_the_listed_indices():
    docs = [Document(id=str(i), text=f"text {i}", source="cc") for i in range(10)]
    keep = MinHashDedupFilter([7, 2, 2])
    assert [d.id for d in keep.run(docs)] == ["0", "1", "3", "4", "5", "6", "8", "9"]
    assert keep.stats.dropped == {"near_duplicate": 2}


def test_config_curve_and_validation():
    assert abs(CFG.threshold - (1 / 14) ** (1 / 8)) < 1e-12 and CFG.num_perm == 112
    assert CFG.probability(0.85) > 0.98 and CFG.probability(0.5) < 0.1
    with pytest.raises(ConfigError, match="num_bands"):
        MinHashConfig.load(overrides=["num_bands=0"])
