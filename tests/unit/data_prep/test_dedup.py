"""Dedup across tasks: planted exact, URL and near duplicates found, unrelated docs left, same answer
whatever the split."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from data_prep.config import DedupConfig, MinHashConfig
from data_prep.dedup.keys import TaskKeys, normalize_url
from data_prep.dedup.minhash import minhash_signatures
from data_prep.dedup.removal import REASONS, TaskRemovals, plan_removals, task_removals
from data_prep.document import Document
from data_prep.writers.parquet import ParquetWriter
from pipeline.core.errors import ConfigError

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
    texts += [
        with_changes(texts[0], 80),
        with_changes(texts[3], 80),
        texts[5].upper() + " !!",
        with_changes(texts[0], 80),
    ]
    texts += [random_text(rng, 200) for _ in range(5)]
    return [Document(id=f"doc{i:03d}", text=t, source="cc") for i, t in enumerate(texts)]


EXPECTED_REMOVED = {"doc000", "doc021", "doc022", "doc023"}
"""doc000's cluster keeps doc020, its centre: doc020 and its exact copy doc023 collide in every band."""


def dedup_run(
    docs: list[Document], workdir: Path, n_tasks: int, cfg: DedupConfig | None = None
) -> dict[str, str]:
    """Split ``docs`` into ``n_tasks`` tasks, run keys -> cluster -> removal; returns {removed id: reason}."""
    cfg = cfg or DedupConfig()
    chunks = np.array_split(np.arange(len(docs)), n_tasks)
    tasks = {f"{t:05d}": [docs[i] for i in chunk] for t, chunk in enumerate(chunks)}
    sizes, shards = [], {}
    for task, task_docs in tasks.items():
        keys = TaskKeys(cfg)
        writer = ParquetWriter(workdir / "filtered", task, docs_per_shard=7, on_rows=keys.add)
        shards[task] = writer.write(task_docs)
        sizes.append(keys.save(workdir / "keys", task))
    assert sizes == [len(task_docs) for task_docs in tasks.values()]
    summary = plan_removals(workdir, workdir / "keys", list(tasks), sizes, cfg)
    removed: dict[str, str] = {}
    for task, task_docs in tasks.items():
        for position, code in task_removals(workdir, task).tolist():
            removed[task_docs[position].id] = REASONS[code - 1]
        step = TaskRemovals.for_task(workdir, task)
        kept = [id_ for table in step.kept_rows(shards[task]) for id_ in table.column("id").to_pylist()]
        assert kept == [doc.id for doc in task_docs if doc.id not in removed]
    assert sum(summary["removed"].values()) == len(removed)
    return removed


def removed_ids(docs: list[Document], workdir: Path, n_tasks: int) -> set[str]:
    return set(dedup_run(docs, workdir, n_tasks))


def test_planted_near_and_exact_duplicates_are_removed_and_unrelated_kept(corpus, tmp_path):
    assert removed_ids(corpus, tmp_path, 1) == EXPECTED_REMOVED


def test_same_removal_set_for_one_or_three_tasks(corpus, tmp_path):
    assert removed_ids(corpus, tmp_path / "three", 3) == removed_ids(corpus, tmp_path / "one", 1)


def test_a_task_without_documents_writes_no_keys_file_and_clusters_with_the_rest(corpus, tmp_path):
    """In a crawl many inputs lose every page to the filters; creating an empty keys file each cost more
    than their keys. The cluster stage takes their size (0) from the marker instead."""
    stale = tmp_path / "keys" / "00001.npy"  # an earlier run's file under the same name goes too
    stale.parent.mkdir()
    stale.write_bytes(b"stale")
    assert TaskKeys(DedupConfig()).save(tmp_path / "keys", "00001") == 0
    assert not stale.exists()
    with_empty = tmp_path / "with_empty"
    cfg = DedupConfig()
    sizes = []
    for task, task_docs in {"00000": corpus[:12], "00001": [], "00002": corpus[12:]}.items():
        keys = TaskKeys(cfg)
        ParquetWriter(with_empty / "filtered", task, docs_per_shard=7, on_rows=keys.add).write(task_docs)
        sizes.append(keys.save(with_empty / "keys", task))
    assert sorted(p.name for p in (with_empty / "keys").iterdir()) == ["00000.npy", "00002.npy"]
    plan_removals(with_empty, with_empty / "keys", ["00000", "00001", "00002"], sizes, cfg)
    found = {
        (corpus[:12] if task == "00000" else corpus[12:])[position].id
        for task in ("00000", "00002")
        for position, _ in task_removals(with_empty, task).tolist()
    }
    assert found == EXPECTED_REMOVED


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


def test_signatures_do_not_depend_on_pythonhashseed(corpus):
    code = (
        "import sys, numpy as np; from data_prep.dedup.minhash import MinHashConfig, minhash_signatures; "
        "texts = sys.stdin.read().split('\\x00'); "
        "sys.stdout.write(minhash_signatures(texts, MinHashConfig()).tobytes().hex())"
    )
    texts = "\x00".join(d.text for d in corpus[:5])
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            input=texts,
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    }
    assert outputs == {minhash_signatures(texts.split("\x00"), CFG).tobytes().hex()}


def test_removal_drops_exactly_the_listed_positions_across_shards_and_books_them(tmp_path):
    docs = [Document(id=str(i), text=f"text {i} é", source="cc", metadata={"n": i}) for i in range(10)]
    shards = ParquetWriter(tmp_path / "filtered", "t", docs_per_shard=4).write(docs)  # rows 0-3, 4-7, 8-9
    step = TaskRemovals(np.array([[2, 1], [4, 2], [7, 3], [8, 3]]))
    writer = ParquetWriter(tmp_path / "docs", "t", docs_per_shard=4)
    written = writer.write_tables(step.kept_rows(shards))
    rows = [row for shard in written for row in pq.read_table(shard).to_pylist()]
    assert [row["id"] for row in rows] == ["0", "1", "3", "5", "6", "9"]
    assert [json.loads(row["metadata"]) for row in rows] == [{"n": int(row["id"])} for row in rows]
    assert [pq.read_metadata(shard).num_rows for shard in written] == [4, 2]
    assert step.stats.dropped == {"duplicate": 1, "duplicate_url": 1, "near_duplicate": 2}
    kept_bytes = sum(len(f"text {i} é".encode()) for i in (0, 1, 3, 5, 6, 9))
    assert (step.stats.input, step.stats.kept, step.stats.bytes) == (10, 6, kept_bytes)
    assert (writer.stats.input, writer.stats.kept, writer.stats.bytes) == (6, 6, kept_bytes)
    # The same documents written directly make the same shards, byte for byte.
    direct = ParquetWriter(tmp_path / "direct", "t", docs_per_shard=4).write(
        [doc for doc in docs if doc.id in {"0", "1", "3", "5", "6", "9"}]
    )
    assert [shard.read_bytes() for shard in direct] == [shard.read_bytes() for shard in written]


def test_reasons_exact_before_url_before_near(corpus, tmp_path):
    docs = [Document(id=d.id, text=d.text, source="cc", url=f"https://example.org/{d.id}") for d in corpus]
    docs.append(
        Document(
            id="same-url",
            text=corpus[7].text + " extra words here",
            source="cc",
            url="HTTPS://Example.org:443/doc001#top",
        )
    )
    docs.append(
        Document(
            id="wiki-same-url",
            text="an unrelated wiki page with words",
            source="wiki",
            url="https://example.org/doc002",
        )
    )
    removed = dedup_run(docs, tmp_path, 2)
    assert removed == {
        "doc000": "near_duplicate",
        "doc021": "near_duplicate",
        "doc022": "duplicate",
        "doc023": "duplicate",
        "same-url": "duplicate_url",
    }  # doc023 == doc020 (the cluster's keeper), exactly


def test_each_kind_can_be_switched_off(corpus, tmp_path):
    only_exact = DedupConfig(url=False, minhash=MinHashConfig(enabled=False))
    assert dedup_run(corpus, tmp_path / "exact", 3, only_exact) == {
        "doc022": "duplicate",
        "doc023": "duplicate",
    }
    only_near = DedupConfig(exact=False, url=False)
    assert set(dedup_run(corpus, tmp_path / "near", 3, only_near).values()) == {"near_duplicate"}


def test_exact_keys_fold_case_spacing_and_punctuation(tmp_path):
    base = "Varnholt is a small market town in the north of the region."
    docs = [
        Document(id="a", text=base, source="cc"),
        Document(id="b", text="  VARNHOLT is a small market town -- in the north of the region", source="cc"),
        Document(id="c", text=base.replace("small", "little"), source="cc"),
    ]
    assert dedup_run(docs, tmp_path, 1, DedupConfig(url=False, minhash=MinHashConfig(enabled=False))) == {
        "b": "duplicate"
    }


def test_url_normalisation():
    assert normalize_url("HTTP://Example.COM:80/a/b?x=1#frag") == "http://example.com/a/b?x=1"
    assert normalize_url("https://example.com") == "https://example.com/"
    assert normalize_url("https://example.com:8443/a") == "https://example.com:8443/a"
    assert normalize_url("https://example.com/A") != normalize_url(
        "https://example.com/a"
    )  # paths are case-sensitive
    assert normalize_url("http://[::1") == "http://[::1"  # malformed: compared as written


def test_config_curve_and_validation():
    assert abs(CFG.threshold - (1 / 14) ** (1 / 8)) < 1e-12 and CFG.num_perm == 112
    assert CFG.probability(0.85) > 0.98 and CFG.probability(0.5) < 0.1
    with pytest.raises(ConfigError, match="num_bands"):
        MinHashConfig.load(overrides=["num_bands=0"])
