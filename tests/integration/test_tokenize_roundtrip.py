"""docs/*.parquet -> train tokenizer -> tokenize -> shards, read back through every consumer."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import Dataset, List, Value
from tokenizers import Tokenizer

from data_prep.tokenizer.config import TokenizeConfig, TokenizerTrainConfig
from data_prep.tokenizer.tokenize import split_of, tokenize
from data_prep.tokenizer.train import train_tokenizer
from pipeline.core.files import file_sha256
from pipeline.train.data import unigram_perplexity
from pipeline.train.windows import TokenWindows

WORDS = [
    "the",
    "of",
    "and",
    "river",
    "language",
    "model",
    "history",
    "city",
    "music",
    "small",
    "large",
    "ancient",
    "modern",
    "café",
    "naïve",
    "Zürich",
    "東京",
    "مرحبا",
    "Ελλάδα",
    "emoji🙂",
    "👩\u200d🔬",
    "é",
    "data",
    "1887",
    "3.14",
    "#tag",
    "C++",
    "<|eos|>",
    "<|pad|>",
]
SEPARATORS = [" ", " ", " ", "  ", "\n", "\n\n", "\t", "\r\n", ", ", ". "]
VAL_FRACTION = 0.25


def make_text(rng: random.Random) -> str:
    words = [rng.choice(WORDS) + rng.choice(SEPARATORS) for _ in range(rng.randint(1, 80))]
    return rng.choice(["", " ", "\n"]) + "".join(words)


@pytest.fixture(scope="module")
def docs_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("prep")
    rng = random.Random(1)
    (root / "docs").mkdir()
    for f in range(3):
        ids = [f"{f}/{i}" for i in range(60)]
        pq.write_table(
            pa.table(
                {
                    "id": ids,
                    "text": [make_text(rng) for _ in ids],
                    "source": ["wiki" if rng.random() < 0.4 else "cc" for _ in ids],
                    "url": [f"https://example.org/{i}" for i in ids],
                    "metadata": ["{}" for _ in ids],
                }
            ),
            root / "docs" / f"{f:05d}.parquet",
            compression="zstd",
        )
    return root


@pytest.fixture(scope="module")
def tokenizer_dir(docs_dir, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer(
        TokenizerTrainConfig(input=str(docs_dir), output=str(output), vocab_size=400, min_frequency=1)
    )
    return output


def run(docs_dir, tokenizer_dir, output, workers=1) -> dict:
    return tokenize(
        TokenizeConfig(
            input=[str(docs_dir)],
            tokenizer=str(tokenizer_dir),
            output=str(output),
            val_fraction=VAL_FRACTION,
            shard_size_bytes=2000,
            batch_size=7,
            workers=workers,
        )
    )


@pytest.fixture(scope="module")
def tokenized(docs_dir, tokenizer_dir, tmp_path_factory) -> tuple[Path, dict]:
    output = tmp_path_factory.mktemp("tokens")
    return output, run(docs_dir, tokenizer_dir, output)


def shard_rows(output: Path, manifest: dict) -> dict[str, list[list[int]]]:
    rows = {}
    for shard in manifest["shards"]:
        with pa.memory_map(str(output / shard["path"])) as source:
            rows[shard["path"]] = pa.ipc.open_stream(source).read_all().column("input_ids").to_pylist()
    return rows


def shard_bytes(output: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((output / "shards").iterdir())}


def test_every_document_decodes_back_exactly(docs_dir, tokenized):
    output, manifest = tokenized
    tokenizer = Tokenizer.from_file(str(output / "tokenizer.json"))
    eos = manifest["tokenizer"]["eos_id"]
    # A task is one input file; within it, each (split, source) series keeps the file's document order.
    expected: dict[tuple[str, str, int], list[str]] = {}
    for task, path in enumerate(sorted((docs_dir / "docs").glob("*.parquet"))):
        for doc in pq.read_table(path).to_pylist():
            if doc["text"]:
                expected.setdefault((split_of(doc["id"], VAL_FRACTION), doc["source"], task), []).append(
                    doc["text"]
                )
    actual: dict[tuple[str, str, int], list[list[int]]] = {}
    for path, rows in shard_rows(output, manifest).items():
        split, source, task, _ = Path(path).stem.split("-")
        actual.setdefault((split, source, int(task)), []).extend(rows)
    assert actual.keys() == expected.keys()
    for key, rows in actual.items():
        assert all(row[-1] == eos and eos not in row[:-1] for row in rows)
        assert [tokenizer.decode(row[:-1]) for row in rows] == expected[key]
    # Each document is in exactly one split; the val share is near the fraction.
    by_split = manifest["totals"]["by_split"]
    assert by_split["train"]["docs"] + by_split["val"]["docs"] == sum(map(len, expected.values()))
    assert 0.1 < by_split["val"]["docs"] / manifest["totals"]["docs"] < 0.4
    assert len(manifest["shards"]) > 8  # shard_size_bytes forced rollovers


def test_manifest_totals_and_hashes_match_the_files(tokenized):
    output, manifest = tokenized
    rows = shard_rows(output, manifest)
    for shard in manifest["shards"]:
        assert shard["sha256"] == file_sha256(output / shard["path"])
        assert shard["docs"] == len(rows[shard["path"]])
        assert shard["tokens"] == sum(map(len, rows[shard["path"]]))
    totals = manifest["totals"]
    assert totals["docs"] == sum(s["docs"] for s in manifest["shards"])
    assert totals["tokens"] == sum(s["tokens"] for s in manifest["shards"])
    for group in ("split", "source"):
        for name, counts in totals[f"by_{group}"].items():
            assert counts["tokens"] == sum(s["tokens"] for s in manifest["shards"] if s[group] == name)
    assert manifest["tokenizer"]["sha256"] == file_sha256(output / "tokenizer.json")
    assert json.loads((output / "manifest.json").read_text()) == manifest


def test_datasets_loads_every_shard(tokenized):
    output, manifest = tokenized
    rows = shard_rows(output, manifest)
    for shard in manifest["shards"]:
        dataset = Dataset.from_file(str(output / shard["path"]))
        assert dataset.features["input_ids"] == List(Value("uint16"))
        assert dataset["input_ids"] == rows[shard["path"]]


def test_reruns_and_worker_counts_give_identical_shards(docs_dir, tokenizer_dir, tokenized, tmp_path):
    output, manifest = tokenized
    again = run(docs_dir, tokenizer_dir, tmp_path / "again")
    parallel = run(docs_dir, tokenizer_dir, tmp_path / "parallel", workers=2)
    assert again["shards"] == parallel["shards"] == manifest["shards"]
    assert shard_bytes(tmp_path / "again") == shard_bytes(tmp_path / "parallel") == shard_bytes(output)


def test_loader_reads_the_tokenized_output(tokenized):
    output, manifest = tokenized
    windows = TokenWindows(output, "train", seq_len=32)
    assert windows.num_tokens == manifest["totals"]["by_split"]["train"]["tokens"]
    first_rows = shard_rows(output, {"shards": manifest["shards"][:1]})
    first = np.concatenate([np.array(r) for r in next(iter(first_rows.values()))])
    np.testing.assert_array_equal(windows.window(0), first[:33])
    assert 1.0 < unigram_perplexity(output) < manifest["tokenizer"]["vocab_size"]
